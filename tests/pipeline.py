"""Running pipeline stages in-process for tests: each with its own clients, stepped in turn."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from producers.gantry.night import log_line, uploads, write_upload
from terra_xfer.config import Config

START = datetime(2017, 8, 24, 19, 0, tzinfo=UTC)


class Steppable(Protocol):
    def step(self) -> int: ...


def gantry_config(config: Config, **batcher: Any) -> Config:
    """``config`` with the gantry reading /gantry_data paths and a quick batcher."""
    return dataclasses.replace(
        config,
        gantry=dataclasses.replace(config.gantry, log_root="/gantry_data"),
        batcher=dataclasses.replace(config.batcher, **({"max_wait_s": 1.0} | batcher)),
        monitor=dataclasses.replace(
            config.monitor, poll_initial_s=0.05, poll_max_s=0.5, retry_backoff_s=0.2
        ),
    )


def write_night(config: Config, count: int, seed: int = 1, size: int = 64) -> list[str]:
    """Write ``count`` uploads into the cache and the xferlog; return whitelisted relative paths."""
    rng = random.Random(seed)
    config.gantry.cache_root.mkdir(parents=True, exist_ok=True)
    config.gantry.xferlog.parent.mkdir(parents=True, exist_ok=True)
    shipped = []
    with config.gantry.xferlog.open("ab") as log:
        for up in uploads(START, count, seed=seed, size=size):
            write_upload(config.gantry.cache_root, up, rng)
            log.write(log_line(up, size=(config.gantry.cache_root / up.rel).stat().st_size))
            if up.whitelisted:
                shipped.append(up.rel)
    return shipped


def run_until(
    stages: Iterable[Steppable], done: Callable[[], bool], timeout_s: float = 120.0
) -> None:
    """Step every stage in turn until ``done()`` holds (checked between rounds) or time runs out."""
    stages = list(stages)
    deadline = time.monotonic() + timeout_s
    checked = 0.0
    while True:
        if time.monotonic() - checked >= 1.0:  # done() may read whole topics: not every round
            if done():
                return
            checked = time.monotonic()
        assert time.monotonic() < deadline, "the pipeline did not get there in time"
        for stage in stages:
            stage.step()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
