"""A stage process of ``up``: :func:`main` in a fresh interpreter, started by the supervisor.

Its orders (the stage's registry entry, the configuration, how to log) arrive on standard input,
which then stays open as the process's life line: the supervisor never writes to it again, so it
reads end-of-file exactly when the supervisor is gone, however it went. The process then exits at
once, without waiting on anything the supervisor might have held: whatever the stage had not
committed is done again by the next incarnation, as after any crash. On Linux the kernel also
kills it when the supervisor dies (``PR_SET_PDEATHSIG``), so no stage outlives its ``up``.

It reports each step on a pipe of its own (:class:`Reporter`): items handled, when, and what it is
waiting for. Exit codes tell the supervisor how it ended: 0 stopped when told, 1 failed,
:data:`EXIT_CONFIG` a configuration error (``up`` stops), ``stall_guard.STALLED_EXIT_CODE`` stalled.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pickle
import signal
import struct
import sys
import threading
import time
from dataclasses import dataclass

from terra_xfer.config import Config
from terra_xfer.errors import ConfigError, TerraXferError
from terra_xfer.logs import configure, secrets_of
from terra_xfer.metrics_http import Health
from terra_xfer.stages.host import StopSignal, run_stage
from terra_xfer.stages.spec import StageSpec
from terra_xfer.stages.stall_guard import StallGuard

log = logging.getLogger(__name__)
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_ORPHANED = 70  # nobody sees it: the supervisor is gone
COMM = "/proc/self/comm"
PR_SET_PDEATHSIG = 1
LENGTH = struct.Struct("<Q")
REPORT_EVERY_S = 0.2


@dataclass(frozen=True)
class Orders:
    """What the supervisor tells a stage process (pickled onto its standard input)."""

    spec: StageSpec
    config: Config
    supervisor_pid: int
    report_fd: int
    log_level: str = "INFO"
    log_json: bool | None = None

    def encode(self) -> bytes:
        body = pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        return LENGTH.pack(len(body)) + body


def read_orders(fd: int = 0) -> Orders:
    """The orders on ``fd``: a length, then the pickled :class:`Orders`."""
    head = _read_exactly(fd, LENGTH.size)
    orders = pickle.loads(_read_exactly(fd, LENGTH.unpack(head)[0]))
    assert isinstance(orders, Orders)
    return orders


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise SystemExit(EXIT_ORPHANED)  # the supervisor went before its orders arrived
        data += chunk
    return data


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


def die_with(supervisor_pid: int, life_line: int = 0) -> None:
    """Exit at once when the supervisor is gone: by the kernel's signal where there is one, and
    by end-of-file on ``life_line`` everywhere; never by waiting on a lock it may hold."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the life line alone
    if os.getppid() != supervisor_pid:  # it died before the signal was armed
        os._exit(EXIT_ORPHANED)

    def watch() -> None:
        while True:
            try:
                if not os.read(life_line, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        log.critical("the supervisor is gone: exiting at once")
        logging.shutdown()
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="life-line", daemon=True).start()


class Reporter(Health):
    """The stage's health, told to the supervisor: after steps (at most every 0.2 s, and always
    the first) and whenever what it waits for changes. One JSON line per report, short enough to
    be written atomically; a full pipe drops a report (the next one carries the totals), a closed
    one means the supervisor is gone."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        os.set_blocking(fd, False)
        self._sent = 0.0
        self._state: dict[str, object] = {"handled": 0, "stepped": 0.0, "waiting": None}

    def stepped(self, name: str, handled: int, force: bool = False) -> None:
        now = time.time()
        self.beat(name)
        self._state.update(handled=handled, stepped=now)
        if force or now - self._sent >= REPORT_EVERY_S:
            self._send()

    def waiting(self, name: str, why: str | None) -> None:
        super().waiting(name, why)
        self._state["waiting"] = None if why is None else why[:1000]
        self._send()

    def _send(self) -> None:
        self._sent = time.time()
        try:
            os.write(self.fd, json.dumps(self._state).encode() + b"\n")
        except BlockingIOError:
            pass
        except BrokenPipeError:
            os._exit(EXIT_ORPHANED)


def main() -> None:
    orders = read_orders()
    spec, config = orders.spec, orders.config
    name_process(spec.name)
    die_with(orders.supervisor_pid)
    stop = StopSignal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    configure(orders.log_level, orders.log_json, secrets_of(config))
    reporter = Reporter(orders.report_fd)
    reporter.expect(spec.name)
    try:
        with StallGuard(config.metrics.stall_exit_s) as guard:
            handled = run_stage(
                spec, config, stop, health=reporter, guard=guard, beat=reporter.stepped
            )
        reporter.stepped(spec.name, handled, force=True)
    except ConfigError as exc:
        log.error("stage %s: %s", spec.name, exc)
        code = EXIT_CONFIG
    except TerraXferError as exc:  # ours, with its reason in one sentence
        log.error("stage %s failed: %s", spec.name, exc)
        code = 1
    except BaseException:
        log.exception("stage %s failed", spec.name)
        code = 1
    else:
        code = 0
    logging.shutdown()
    sys.exit(code)
