"""Running several stages together, as `terra-xfer up` does: each in a thread of one process
(:class:`StageRunner`), or each in a process of its own (:class:`ProcessRunner`).

Every stage keeps its own Kafka clients and consumer group, exactly as in its own Deployment; the
threads only share the stop event. A stage whose step raises stops the whole runner (the error is
kept and re-raised by :meth:`StageRunner.join`), because a half-running pipeline would silently
pile up work: better to stop, with the reason, and be restarted. Transient errors (the broker or a
remote service away for a while) are retried after a pause instead.

A stage process given a metrics directory writes its Prometheus metrics there
(prometheus_client's multiprocess mode), so that the parent can serve every stage's series from one
port, as the threads' process does. Each stage process is named ``tx-<stage>`` (the kernel's
15-character ``comm``), so ``ps``, ``top`` and per-process accounting say which stage it runs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from terra_xfer.config import Config
from terra_xfer.errors import TerraXferError, TransientError
from terra_xfer.stages import gc_tuning as heap

log = logging.getLogger(__name__)
RETRY_S = 2.0
COMM = "/proc/self/comm"
# Where prometheus_client keeps a process's metric values, read once when it is first imported.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Stage(Protocol):
    def step(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class StageThread:
    name: str
    stage: Stage
    handled: int = 0
    error: BaseException | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


class Counter(Protocol):
    handled: int


class StopSignal(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def loop(
    name: str, step: Callable[[], int], stop: StopSignal, idle_wait_s: float, counter: Counter
) -> None:
    """Step until ``stop``, adding what each step handled to ``counter.handled``; a transient
    error (the broker or a service away) is retried after :data:`RETRY_S`, any other ends it."""
    while not stop.is_set():
        try:
            count = step()
        except TransientError as exc:
            log.warning("stage %s: %s; retrying in %.0f s", name, exc, RETRY_S)
            stop.wait(RETRY_S)
            continue
        counter.handled += count
        if not count:
            stop.wait(idle_wait_s)


class StageRunner:
    """Start every stage's loop in a thread; stop them all together."""

    def __init__(self, stages: Sequence[tuple[str, Stage]], idle_wait_s: float = 0.05) -> None:
        self.stop = threading.Event()
        self.idle_wait_s = idle_wait_s
        self.threads = [StageThread(name, stage) for name, stage in stages]

    def start(self) -> StageRunner:
        for st in self.threads:
            st.thread = threading.Thread(target=self._loop, args=(st,), name=st.name, daemon=True)
            st.thread.start()
        return self

    def _loop(self, st: StageThread) -> None:
        try:
            loop(st.name, st.stage.step, self.stop, self.idle_wait_s, st)
        except BaseException as exc:  # kept and re-raised by join(); the runner stops
            st.error = exc
            log.exception("stage %s failed; stopping every stage", st.name)
            self.stop.set()

    def wait(self, done: Callable[[], bool], timeout_s: float, check_every_s: float = 1.0) -> bool:
        """Wait until ``done()`` holds, a stage fails, or time runs out; True when done."""
        return _wait(self.stop, done, timeout_s, check_every_s)

    def join(self, close: bool = True, timeout_s: float = 30.0) -> None:
        """Stop every loop, close every stage, and re-raise the first stage error."""
        self.stop.set()
        for st in self.threads:
            if st.thread is not None:
                st.thread.join(timeout_s)
        if close:
            for st in reversed(self.threads):
                try:
                    st.stage.close()
                except Exception:  # closing one must not keep the others open
                    log.exception("closing stage %s failed", st.name)
        errors = [st.error for st in self.threads if st.error is not None]
        if errors:
            raise errors[0]


def _wait(
    stop: threading.Event, done: Callable[[], bool], timeout_s: float, check_every_s: float
) -> bool:
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        stop.wait(check_every_s)
    return False


Builder = Callable[[Config, str], AbstractContextManager[Stage]]


class StageProcessError(TerraXferError):
    """A stage process ended on its own (its step failed, or its watchdog stopped it)."""


@dataclass
class StageProcess:
    """One stage running in a process of its own; the child writes ``counter`` (items handled)
    and ``stepped`` (wall-clock end of its last step, 0.0 before the first)."""

    name: str
    process: BaseProcess
    counter: Any
    stepped: Any
    error: BaseException | None = None

    @property
    def handled(self) -> int:
        return int(self.counter.value)


class ProcessRunner:
    """Every stage in a process of its own, spawned afresh, with StageRunner's interface.

    Threads of one interpreter take turns on its lock; processes run side by side. The semantics
    are the threads': the stages stop together (``join``), a child that ends on its own (a failed
    step, a watchdog exit) stops the others and ``join`` raises, transient errors are retried in
    the child. Interrupts go to the parent, which stops the children in order. Given a
    ``metrics_dir``, the children write their metrics there for the parent to serve
    (``terra_xfer.metrics.gathered``); the directory is the caller's to make and remove.
    """

    def __init__(
        self,
        config: Config,
        names: Sequence[str],
        log_setup: tuple[str, bool | None] = ("INFO", None),
        idle_wait_s: float = 0.05,
        on_step: Callable[[str], None] | None = None,
        builder: Builder | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        """``builder(config, name)`` makes a stage in its process (a module-level function, as
        the child imports it; by default :func:`terra_xfer.pipeline.build_one`). The module that
        holds it must not import prometheus_client at its top: the child imports that module
        before it can choose where its metrics go."""
        ctx = multiprocessing.get_context("spawn")
        self.stop = threading.Event()
        self._halt = ctx.Event()
        self._on_step = on_step
        self._supervisor: threading.Thread | None = None
        self.threads: list[StageProcess] = []
        for name in names:
            counter, stepped = ctx.RawValue("q", 0), ctx.RawValue("d", 0.0)
            args = (
                config,
                name,
                counter,
                stepped,
                self._halt,
                idle_wait_s,
                log_setup,
                builder,
                metrics_dir,
            )
            proc = ctx.Process(target=_child, args=args, name=f"terra-xfer {name}")
            self.threads.append(StageProcess(name, proc, counter, stepped))

    def start(self) -> ProcessRunner:
        for sp in self.threads:
            sp.process.start()
        self._supervisor = threading.Thread(target=self._supervise, name="stages", daemon=True)
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        """Pass each child's steps on, and stop everything when one ends on its own."""
        seen = {sp.name: 0.0 for sp in self.threads}
        while not self.stop.wait(0.2):
            if self._halt.is_set():  # a child was told to stop: every stage stops
                self.stop.set()
            for sp in self.threads:
                if sp.stepped.value != seen[sp.name]:
                    seen[sp.name] = sp.stepped.value
                    if self._on_step is not None:
                        self._on_step(sp.name)
                if sp.process.exitcode is not None and not self._halt.is_set():
                    sp.error = StageProcessError(
                        f"stage {sp.name} exited with {sp.process.exitcode}"
                    )
                    log.error("%s; stopping every stage", sp.error)
                    self.stop.set()

    def wait(self, done: Callable[[], bool], timeout_s: float, check_every_s: float = 1.0) -> bool:
        """Wait until ``done()`` holds, a stage fails, or time runs out; True when done."""
        return _wait(self.stop, done, timeout_s, check_every_s)

    def join(self, close: bool = True, timeout_s: float = 30.0) -> None:
        """Stop every child (each closes its own stage), wait for them, and raise if one failed.

        A child still running at the deadline is terminated, then killed: what it had not
        committed is handled again by the next run, as after any crash.
        """
        self._halt.set()
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for sp in self.threads:
            sp.process.join(max(0.0, deadline - time.monotonic()))
        for sp in self.threads:
            if sp.process.is_alive():
                log.error("stage %s did not stop in time: terminating it", sp.name)
                sp.process.terminate()
                sp.process.join(5.0)
                if sp.process.is_alive():
                    sp.process.kill()
                    sp.process.join()
            elif sp.process.exitcode != 0 and sp.error is None:
                sp.error = StageProcessError(f"stage {sp.name} exited with {sp.process.exitcode}")
        if self._supervisor is not None:
            self._supervisor.join()
        errors = [sp.error for sp in self.threads if sp.error is not None]
        if errors:
            raise errors[0]


class _Halt:
    """A child's stop signal: the runner's event, or its parent gone (never left orphaned)."""

    def __init__(self, halt: Any) -> None:
        self.halt = halt
        self.parent = os.getppid()

    def is_set(self) -> bool:
        return bool(self.halt.is_set()) or os.getppid() != self.parent

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (looking at the parent every second)."""
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while not self.is_set() and time.monotonic() < deadline:
            self.halt.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        return self.is_set()


class _Count:
    """``handled`` kept in shared memory, where the parent reads it."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    @property
    def handled(self) -> int:
        return int(self.counter.value)

    @handled.setter
    def handled(self, value: int) -> None:
        self.counter.value = value


def process_name(stage: str) -> str:
    """The name a stage process goes by in ``ps`` and ``/proc/<pid>/comm``."""
    return f"tx-{stage}"[:15]


def name_process(stage: str, comm: str = COMM) -> None:
    """Name this process after its stage; where the kernel has no ``comm`` file, leave it be."""
    try:
        with open(comm, "w", encoding="ascii") as f:
            f.write(process_name(stage))
    except OSError:
        pass


def _child(
    config: Config,
    name: str,
    counter: Any,
    stepped: Any,
    halt: Any,
    idle_wait_s: float,
    log_setup: tuple[str, bool | None],
    builder: Builder | None,
    metrics_dir: str | None,
) -> None:
    """A stage process: build the stage, step it until told to stop, close it; exit 1 on failure.

    Ctrl-C reaches the whole process group, so the child leaves it to the parent; SIGTERM sent to
    the child stops every stage, as it would stop ``up``. With ``metrics_dir`` its metrics go to
    files there: set before the first import of prometheus_client, which reads it only then.
    """
    name_process(name)
    too_late = metrics_dir is not None and "prometheus_client" in sys.modules
    if metrics_dir is not None and not too_late:
        os.environ[MULTIPROC_DIR_ENV] = metrics_dir  # this process only: it ends with the stage

    from terra_xfer.logs import configure, secrets_of
    from terra_xfer.pipeline import build_one
    from terra_xfer.stages.stall_guard import StepWatchdog

    build = builder or build_one

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: halt.set())
    configure(log_setup[0], log_setup[1], secrets_of(config))
    if too_late:  # a stage without metrics still moves files: say so, and run
        log.error("stage %s: metrics not served, prometheus_client was imported too early", name)
    watchdog = StepWatchdog(config.metrics.stall_exit_s).start()
    try:
        with build(config, name) as stage:
            heap.settle()
            try:

                def step() -> int:
                    count = stage.step()
                    stepped.value = time.time()
                    return count

                loop(name, watchdog.watch(name, step), _Halt(halt), idle_wait_s, _Count(counter))
            finally:
                stage.close()
    except BaseException:
        log.exception("stage %s failed", name)
        logging.shutdown()
        sys.exit(1)
    finally:
        watchdog.stop()
