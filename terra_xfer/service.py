"""The service loop every stage runs in: stop on SIGTERM/SIGINT, poll with short timeouts, run once.

A stage is a ``step`` callable that does one bounded unit of work and returns how many items it
handled. The loop never sleeps blindly: when a step found nothing to do it waits on the stop event,
so a signal ends the wait at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; a second signal restores the default action."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(
    step: Callable[[], int],
    stop: threading.Event,
    *,
    once: bool = False,
    max_items: int | None = None,
    idle_wait_s: float = 0.2,
    idle_exit_s: float | None = None,
) -> int:
    """Call ``step`` until stopped; return the number of items handled.

    ``once``: a single step. ``max_items``: stop after that many items. ``idle_exit_s``: stop after
    that long with nothing to do (used by one-shot commands and tests).
    """
    handled = 0
    idle_since = time.monotonic()
    while not stop.is_set():
        count = step()
        handled += count
        if once or (max_items is not None and handled >= max_items):
            break
        if count:
            idle_since = time.monotonic()
            continue
        if idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
            break
        stop.wait(idle_wait_s)
    return handled
