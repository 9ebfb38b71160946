"""Running a stage from the command line: signals, the loop, and orderly teardown."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import click

from terra_xfer.kafka_security import KafkaUnreachableError, check_access
from terra_xfer.metrics_http import serving
from terra_xfer.service import install_signal_handlers, run
from terra_xfer.stages import gc_tuning as heap
from terra_xfer.stages.stall_guard import StepWatchdog

log = logging.getLogger(__name__)

once_option = click.option("--once", is_flag=True, help="Do one unit of work and exit.")
idle_exit_option = click.option(
    "--idle-exit",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Exit after this long with nothing to do (default: run until SIGTERM/Ctrl-C).",
)


def run_stage(
    name: str,
    step: Callable[[], int],
    close: Callable[[], None],
    *,
    once: bool,
    idle_exit: float | None,
) -> int:
    """Run ``step`` until a signal (or ``once``/``idle_exit``), then ``close``; return items handled."""
    stop = threading.Event()
    install_signal_handlers(stop)
    refuse_bad_credentials()
    with contextlib.ExitStack() as teardown:
        health = teardown.enter_context(serving(_metrics_setting("port", 0)))
        watchdog = StepWatchdog(_metrics_setting("stall_exit_s", 0.0)).start()
        teardown.callback(watchdog.stop)
        teardown.callback(close)
        watched = watchdog.watch(name, health.watch(name, step))
        heap.settle()
        handled = run(watched, stop, once=once, idle_exit_s=idle_exit)
    log.info("%s stopped after %d items", name, handled)
    return handled


def refuse_bad_credentials(timeout_s: float = 10.0) -> None:
    """Stop at once, with the reason, when the cluster refuses this command's credentials.

    An unreachable cluster is only a warning: the stage retries until the brokers are back.
    """
    ctx = click.get_current_context(silent=True)
    config = getattr(ctx.find_root().obj, "config", None) if ctx is not None else None
    if config is None:
        return
    try:
        check_access(config.kafka, timeout_s)
    except KafkaUnreachableError as exc:
        log.warning("%s; starting anyway, the stage retries until the brokers answer", exc)


def _metrics_setting(name: str, outside: float) -> Any:
    """A ``[metrics]`` setting of the running command's configuration (``outside`` without one)."""
    ctx = click.get_current_context(silent=True)
    config = getattr(ctx.find_root().obj, "config", None) if ctx is not None else None
    return getattr(config.metrics, name) if config is not None else outside


class Closable(Protocol):
    def close(self) -> None: ...


def closing(*things: Closable) -> Callable[[], None]:
    """One teardown closing ``things`` in order (the stage first, then what it holds)."""

    def close() -> None:
        for thing in things:
            thing.close()

    return close
