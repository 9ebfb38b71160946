"""A step that never returns stops the process, so that its supervisor starts a fresh one.

A stage's work happens in steps that each finish in seconds or minutes. A step stuck for far
longer (a client library waiting forever on a coordinator lost in a broker restart, say) would
leave the stage alive but doing nothing. Exiting is safe at any moment: every stage resumes from
its last committed transaction. Kubernetes restarts the container; ``terra-xfer up`` under
systemd is restarted by its unit, and a stage process of ``up`` by ``up``.

One step may rightly run for long: a local copy of files.state rebuilt from the whole topic (an
hour and more at a site of tens of millions of files). It tells :meth:`StallGuard.alive` at
every read that brought records, so it is timed from its last progress, not from its start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
STALLED_EXIT_CODE = 75  # EX_TEMPFAIL: try again


class StallGuard:
    """Calls ``on_stall`` (default: exit) once a watched step has run for ``limit_s``."""

    def __init__(
        self,
        limit_s: float,
        on_stall: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_s = limit_s
        self.on_stall = on_stall or _exit
        self.clock = clock
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, name: str, step: Callable[[], int]) -> Callable[[], int]:
        """``step``, timed while it runs."""

        def watched() -> int:
            with self._lock:
                self._running[name] = self.clock()
            try:
                return step()
            finally:
                with self._lock:
                    self._running.pop(name, None)

        return watched

    def alive(self, name: str) -> None:
        """``name``'s running step is getting on (a catch-up that read more): its time starts
        again, so a long step that keeps telling this is never taken for a stuck one."""
        with self._lock:
            if name in self._running:
                self._running[name] = self.clock()

    def check(self) -> None:
        """Report the first step running longer than the limit (once per stall)."""
        now = self.clock()
        with self._lock:
            stalled = [(n, now - t) for n, t in self._running.items() if now - t >= self.limit_s]
        for name, seconds in stalled:
            self.on_stall(name, seconds)

    def start(self) -> StallGuard:
        if self.limit_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="stall-guard", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> StallGuard:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _loop(self) -> None:
        interval = max(0.5, min(10.0, self.limit_s / 10))
        while not self._stop.wait(interval):
            self.check()


def _exit(name: str, seconds: float) -> None:
    log.critical(
        "%s: one step has run for %.0f s; exiting so that a fresh process resumes from the "
        "last committed transaction",
        name,
        seconds,
    )
    logging.shutdown()
    os._exit(STALLED_EXIT_CODE)
