"""``up``'s supervisor: every stage in a process of its own, restarted when it ends, never orphaned.

Each stage runs :func:`terra_xfer.stages.child.main` in a fresh interpreter: the same
host a Kubernetes pod runs. The supervisor and its children share no lock, no semaphore and no
shared memory: orders go down the child's standard input, which then stays open as its life line
(end-of-file: the supervisor is gone, exit at once); reports come back on a pipe; stopping is
SIGTERM, then SIGKILL after the budget. A child that ends on its own (crashed, fenced, stalled,
killed) is started again with the one restart policy (:class:`terra_xfer.stages.host.Restarts`);
a configuration error stops everything, since a restart would only fail the same way.

Call it from one long-lived thread (``up``'s main thread): on Linux a child is killed by the kernel
when the thread that started it ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from terra_xfer.config import Config
from terra_xfer.errors import ConfigError
from terra_xfer.stages.child import EXIT_CONFIG, EXIT_ORPHANED, PR_SET_PDEATHSIG, Orders
from terra_xfer.stages.host import Restarts
from terra_xfer.stages.spec import StageSpec
from terra_xfer.stages.stall_guard import STALLED_EXIT_CODE

log = logging.getLogger(__name__)
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # where a child writes its metrics
# A stage process's first lines, run before it imports anything (importing the stages takes a
# second or more on a busy machine, and a supervisor killed meanwhile must not leave it running):
# ask the kernel for SIGKILL when the supervisor dies (Linux), and exit at once if the supervisor
# (named by its first argument) is already gone. Then the host, not as ``-m
# terra_xfer.stages.child``: run as __main__, its Orders would not be the class the orders were
# pickled with.
CHILD_MAIN = f"""\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, signal.SIGKILL, 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit({EXIT_ORPHANED})
from terra_xfer.stages.child import main
main()
"""


def cause_of(code: int) -> str:
    """How a child that ended with ``code`` (``Popen.returncode``) ended, in a few words."""
    if code == STALLED_EXIT_CODE:
        return "stalled (one step ran past [metrics] stall_exit_s)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == 0:
        return "stopped without being told to"
    return f"failed (exit {code}; its log says why)"


class Lines:
    """Complete lines read from a pipe; an unfinished one waits for the rest."""

    def __init__(self, fd: int, *, tail_at_end: bool) -> None:
        """``tail_at_end``: at end of file an unfinished last line is handed on too (log text);
        otherwise it is dropped (a report cut short by a kill is no report)."""
        self.fd = fd
        self.tail_at_end = tail_at_end
        self.pending = b""

    def read(self) -> list[bytes] | None:
        """The lines completed by what is there now; None at end of file or, when the pipe
        does not block, when nothing is there."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return None
        if not data:
            tail, self.pending = self.pending, b""
            return [tail] if tail and self.tail_at_end else None
        *lines, self.pending = (self.pending + data).split(b"\n")
        return lines

    def drain(self) -> list[bytes]:
        """Every line still in the pipe, without waiting for more (its writer has ended)."""
        out: list[bytes] = []
        with contextlib.suppress(OSError):
            os.set_blocking(self.fd, False)
            while (lines := self.read()) is not None:
                out += lines
        return out


@dataclass
class Child:
    """One stage's process and what it last reported."""

    spec: StageSpec
    restarts: Restarts
    proc: subprocess.Popen[bytes] | None = None
    reports: Lines | None = None  # its report pipe
    logs: Lines | None = None  # its stderr, when relayed
    handled_before: int = 0  # by the stage's earlier processes
    handled_now: int = 0
    stepped: float = 0.0
    waiting: str | None = None
    start_at: float | None = None  # when an ended child is due to start again
    pids: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def handled(self) -> int:
        return self.handled_before + self.handled_now


class Supervisor:
    """Starts, watches, restarts and stops one process per stage."""

    def __init__(
        self,
        config: Config,
        specs: Sequence[StageSpec],
        *,
        log_setup: tuple[str, bool | None] = ("INFO", None),
        metrics_dir: str | None = None,
        on_step: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
        relay: Callable[[bytes], None] | None = None,
    ) -> None:
        """``relay``: each stage process's stderr comes here instead, a line at a time (``up``'s
        live progress line prints them above itself); None: they write to this one's."""
        self.config = config
        self.relay = relay
        self.log_setup = log_setup
        self.metrics_dir = metrics_dir
        self.on_step = on_step
        self.env = dict(os.environ if env is None else env)
        if metrics_dir is not None:
            self.env[MULTIPROC_DIR_ENV] = metrics_dir
        self.children = [Child(spec, Restarts(spec.name)) for spec in specs]
        self._stopping = False

    def start(self) -> Supervisor:
        for child in self.children:
            self._start(child)
        return self

    def _start(self, child: Child) -> None:
        read, write = os.pipe()
        orders = Orders(child.spec, self.config, os.getpid(), write, *self.log_setup)
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_MAIN, str(os.getpid())],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE if self.relay is not None else None,
            pass_fds=(write,),
            env=self.env,
        )
        os.close(write)
        if proc.stderr is not None:
            child.logs = Lines(proc.stderr.fileno(), tail_at_end=True)
        assert proc.stdin is not None
        proc.stdin.write(orders.encode())
        proc.stdin.flush()  # and kept open: the child's life line
        child.proc, child.reports = proc, Lines(read, tail_at_end=False)
        child.handled_before += child.handled_now
        child.handled_now, child.start_at = 0, None
        child.pids.append(proc.pid)
        child.restarts.started()

    @property
    def handled(self) -> dict[str, int]:
        return {c.name: c.handled for c in self.children}

    @property
    def waiting(self) -> dict[str, str]:
        """What each stage process last said it waits for (retrying a service, say), or that it
        is about to be started again."""
        now = time.monotonic()
        found = {c.name: c.waiting for c in self.children if c.waiting}
        for c in self.children:
            if c.start_at is not None:
                found[c.name] = f"ended; starting again in {max(0.0, c.start_at - now):.0f} s"
        return found

    def tick(self, timeout_s: float) -> None:
        """Read reports for up to ``timeout_s``, then restart what ended and is due.

        Raises ``ConfigError`` when a stage ended on a configuration error.
        """
        reports = {c.reports.fd: (c, c.reports) for c in self.children if c.reports is not None}
        logs = {c.logs.fd: c.logs for c in self.children if c.logs is not None}
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([*reports, *logs], [], [], timeout_s)
            for fd in ready:
                if fd in reports:
                    child, pipe = reports[fd]
                    self._take(child, pipe.read() or [])
                else:
                    self._relay(logs[fd].read() or [])
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._ended(child, now)
            elif child.start_at is not None and now >= child.start_at and not self._stopping:
                self._start(child)

    def _take(self, child: Child, lines: list[bytes]) -> None:
        """Take the report lines of ``child``."""
        for line in lines:
            report = json.loads(line)
            child.handled_now = int(report["handled"])
            child.waiting = report.get("waiting")
            if report["stepped"] != child.stepped:
                child.stepped = float(report["stepped"])
                if self.on_step is not None:
                    self.on_step(child.name)

    def _relay(self, lines: list[bytes]) -> None:
        """Hand on lines a child wrote to its stderr."""
        if lines and self.relay is not None:
            self.relay(b"".join(line + b"\n" for line in lines))

    def _ended(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        self._release(child)
        if self._stopping:
            return
        if code == EXIT_CONFIG:
            raise ConfigError(f"stage {child.name} stopped on a configuration error (see its log)")
        child.start_at = now + child.restarts.ended(cause_of(code))

    def _release(self, child: Child) -> None:
        """Drain and close what the ended child's process held open here."""
        if child.reports is not None:
            self._take(child, child.reports.drain())
            os.close(child.reports.fd)
            child.reports = None
        if child.logs is not None:
            self._relay(child.logs.drain())
            child.logs = None  # closed with the process's stderr pipe
            if child.proc is not None and child.proc.stderr is not None:
                child.proc.stderr.close()
        if child.proc is not None and child.proc.stdin is not None:
            with contextlib.suppress(OSError):
                child.proc.stdin.close()
        child.proc = None

    def stop(self, budget_s: float = 10.0) -> None:
        """SIGTERM every stage process, wait up to ``budget_s`` for all of them, SIGKILL the rest.

        What a killed stage had not committed is done again by the next run, as after any crash.
        """
        self._stopping = True
        running = [c for c in self.children if c.proc is not None]
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.terminate()
        deadline = time.monotonic() + budget_s
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("stage %s did not stop within %.0f s: killing it", child.name, budget_s)
                child.proc.kill()
                child.proc.wait()
            self._release(child)
