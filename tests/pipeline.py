"""Running pipeline stages in-process for tests: each with its own clients, stepped in turn."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from producers.gantry.night import log_line, uploads, write_upload
from terra_xfer.config import Config
from terra_xfer.runner import StageRunner
from tests.kafka_read import env_for, read_all

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


def write_night(
    config: Config, count: int, seed: int = 1, size: int = 64, skip: int = 0
) -> list[str]:
    """Write ``count`` uploads into the cache and the xferlog; return whitelisted relative paths.

    ``skip``: leave out the first uploads of the night (written earlier by a call with the same
    seed and ``count`` = ``skip``).
    """
    rng = random.Random(seed)
    config.gantry.cache_root.mkdir(parents=True, exist_ok=True)
    config.gantry.xferlog.parent.mkdir(parents=True, exist_ok=True)
    shipped = []
    with config.gantry.xferlog.open("ab") as log:
        for up in itertools.islice(uploads(START, count, seed=seed, size=size), skip, None):
            write_upload(config.gantry.cache_root, up, rng)
            log.write(log_line(up, size=(config.gantry.cache_root / up.rel).stat().st_size))
            if up.whitelisted:
                shipped.append(up.rel)
    return shipped


def run_until(
    stages: Iterable[Steppable], done: Callable[[], bool], timeout_s: float = 120.0
) -> None:
    """Run every stage in its own thread (as `terra-xfer up` does) until ``done()`` holds.

    The stages are not closed: the caller closes them (and may run them again).
    """
    runner = StageRunner([(type(s).__name__, s) for s in stages])  # type: ignore[misc]
    runner.start()
    try:
        reached = runner.wait(done, timeout_s)
    finally:
        runner.join(close=False)
    assert reached, "the pipeline did not get there in time"


def drain(stage: Steppable) -> None:
    """Step one stage until it has nothing left to do."""
    while stage.step():
        pass


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def up_process(config: Config, *extra: str) -> subprocess.Popen[bytes]:
    """``terra-xfer up`` as a user starts it, on ``config`` (through the environment).

    Its log goes to a temporary file, read with :func:`finished`: a pipe nobody reads while it
    runs fills up, and then every stage blocks on its next log line and never gets idle.
    """
    env = {**os.environ, **env_for(config)}
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by finished(), after the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "terra_xfer", "--log-json", "up", "--quiet", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    _UP_LOGS[proc.pid] = log
    return proc


_UP_LOGS: dict[int, Any] = {}


def finished(proc: subprocess.Popen[bytes]) -> bytes:
    """Kill ``proc`` if it still runs, reap it, and return what it logged (the first time)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)
    log = _UP_LOGS.pop(proc.pid, None)
    if log is None:
        return b""
    try:
        log.seek(0)
        data: bytes = log.read()
        return data
    finally:
        log.close()


def exit_status(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """``up``'s exit status; if it is still running after ``timeout_s``, fail with its log's end."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        tail = finished(proc).decode("utf-8", "replace").splitlines()[-40:]
        pytest.fail(f"up still ran after {timeout_s} s; the end of its log:\n" + "\n".join(tail))


def file_states(config: Config) -> dict[str, str]:
    """Each file's state name, as committed to files.state now."""
    return {v["key"]: v["state"] for _, v in read_all(config.kafka, config.topic("files.state"))}
