"""Running pipeline stages in-process for tests: each with its own clients, stepped in turn."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pytest

from producers.gantry.night import log_line, uploads, write_upload
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.stages.host import Beat, Retries, RunOptions, StopSignal, step_loop
from terra_xfer.stages.spec import Stage, Wiring
from tests.kafka_read import env_for, read_all

log = logging.getLogger(__name__)
START = datetime(2017, 8, 24, 19, 0, tzinfo=UTC)


class Steppable(Protocol):
    def step(self) -> int: ...


class Stepping:
    """Stages built by a test, each stepped in a thread of its own by the host's step loop (as
    ``up --threads`` steps the stages it builds): transient errors are retried with the host's
    backoff, any other error stops every stage and is re-raised by :meth:`join`.

    The stages are not closed: their builder closes them (and may step them again).
    """

    def __init__(
        self,
        stages: Iterable[Steppable],
        names: Iterable[str] | None = None,
        beat: Beat | None = None,
    ) -> None:
        """``names``: one per stage (default: each stage's class name, numbered from the second
        of a class on); ``beat(name, handled)`` is told after every step, as the host tells a
        stage's health."""
        self.stages = list(stages)
        self.names = list(names) if names is not None else _class_names(self.stages)
        assert len(self.names) == len(self.stages) == len(set(self.names)), self.names
        self.beat = beat
        self.stop = StopSignal()
        self.handled = dict.fromkeys(self.names, 0)
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> Stepping:
        for name, stage in zip(self.names, self.stages, strict=True):
            thread = threading.Thread(
                target=self._run, args=(name, stage), name=f"step-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self, name: str, stage: Steppable) -> None:
        try:
            step_loop(name, stage.step, self.stop, RunOptions(), Retries(name), self._beat)
        except BaseException as exc:  # kept and re-raised by join(); every stage stops
            log.exception("stage %s failed; stopping every stage", name)
            with self._lock:
                if self.error is None:
                    self.error = exc
            self.stop.set()

    def _beat(self, name: str, handled: int) -> None:
        self.handled[name] = handled
        if self.beat is not None:
            self.beat(name, handled)

    def wait(self, done: Callable[[], bool], timeout_s: float, check_every_s: float = 0.5) -> bool:
        """Wait until ``done()`` holds (True), a stage fails or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set():
            if done():
                return True
            if time.monotonic() >= deadline:
                return False
            self.stop.wait(min(check_every_s, max(0.0, deadline - time.monotonic())))
        return False

    def join(self, timeout_s: float = 30.0) -> None:
        """Stop every stage, wait for its thread, and re-raise the first stage's error."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if self.error is not None:
            raise self.error
        assert not stuck, f"still stepping {timeout_s} s after the stop: {stuck}"

    def __enter__(self) -> Stepping:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.join()


def _class_names(stages: Sequence[Steppable]) -> list[str]:
    """Each stage's class name: ``Batcher``, and ``GantryProducer``, ``GantryProducer-2``, …"""
    seen: dict[str, int] = {}
    names = []
    for stage in stages:
        name = type(stage).__name__
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


@contextlib.contextmanager
def built(config: Config, names: Sequence[str]) -> Iterator[list[tuple[str, Stage]]]:
    """The registry's stages called ``names``, built as the host builds them; each stage, then
    what it was given, is closed when the block ends."""
    with contextlib.ExitStack() as held:
        stages = []
        for name in names:
            spec = registry.spec(name)
            stage = spec.build(Wiring(config, spec, held))
            held.callback(stage.close)  # the stage closes before what it was given
            stages.append((name, stage))
        yield stages


def gantry_config(config: Config, **batcher: Any) -> Config:
    """``config`` with the gantry reading /gantry_data paths and a quick batcher."""
    return dataclasses.replace(
        config,
        gantry=dataclasses.replace(config.gantry, log_root="/gantry_data"),
        batcher=dataclasses.replace(config.batcher, **({"max_wait_s": 1.0} | batcher)),
        monitor=dataclasses.replace(
            config.monitor,
            poll_initial_s=0.05,
            poll_max_s=0.5,
            retry_backoff_s=0.2,
            submit_grace_s=1.0,
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
    """Run every stage in its own thread (as `terra-xfer up --threads` does) until ``done()``
    holds; a stage's error is raised.

    The stages are not closed: the caller closes them (and may run them again).
    """
    with Stepping(stages) as running:
        reached = running.wait(done, timeout_s)
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
