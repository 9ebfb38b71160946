"""The one host every stage runs in, whoever starts it: its own command (Kubernetes), a process
of ``up``, or a thread of ``up --threads``.

:func:`run_stage` builds the stage from its registry entry, settles the heap, and steps it until
told to stop (or ``--once``, ``--idle-exit``, ``max_items``); then closes the stage and what it
was given, in that order. Transient errors (the broker or a remote service away for a while) are
retried with backoff, logged once per cause and counted (:class:`Retries`); anything else ends the
run and is raised to whoever started it, which restarts the stage: Kubernetes, or ``up`` with the
one restart policy (:class:`Restarts`).

:func:`serve` is what ``terra-xfer <stage>`` runs: :func:`run_stage` with signal handling,
/metrics, /healthz, /readyz and the stall guard.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from types import FrameType

from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import TransientError, failure_cause
from terra_xfer.kafka import broker_away
from terra_xfer.metrics_http import Health, serving
from terra_xfer.stages import gc_tuning
from terra_xfer.stages.spec import StageSpec, Wiring
from terra_xfer.stages.stall_guard import StallGuard

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.05  # between two steps that found nothing to do
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 30.0
STILL_FAILING_EVERY_S = 60.0
FIRST_RESTART_S = 1.0
MAX_RESTART_S = 60.0
HEALTHY_RUN_S = 60.0  # a run this long resets the restart backoff


class StopSignal:
    """A stop flag that signal handlers and other threads can set without taking any lock.

    ``threading.Event`` takes a lock in ``set``; a signal handler that runs while the interrupted
    code holds it waits for ever. Here ``set`` writes one byte to a pipe, and ``wait`` selects on
    the pipe, which nobody drains: once set, every waiter in every thread wakes at once.
    """

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        if not self._set:
            self._set = True
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._write, b"x")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the flag; True when it is set."""
        if not self._set:
            with contextlib.suppress(InterruptedError):
                select.select([self._read], [], [], timeout)
        return self._set


def install_signal_handlers(stop: StopSignal) -> None:
    """SIGTERM and SIGINT set ``stop``; a second one restores the default action."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@dataclass(frozen=True)
class RunOptions:
    """When a run ends besides a stop signal: after one step, after ``max_items`` items, or after
    ``idle_exit_s`` seconds with nothing to do."""

    once: bool = False
    idle_exit_s: float | None = None
    max_items: int | None = None


def transient(exc: BaseException) -> TransientError | None:
    """``exc`` as a transient error when it is one (a Kafka cluster that is away counts, wherever
    its client raised it), else None."""
    if isinstance(exc, TransientError):
        return exc
    if broker_away(exc):
        err = exc.args[0]
        return TransientError(f"Kafka: {err.str()}")
    return None


class Retries:
    """The one retry policy: exponential backoff from 0.5 s to 30 s, the cause logged once (and
    again every minute while it lasts), counted, and shown as the stage's readiness reason."""

    def __init__(
        self, stage: str, health: Health | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stage = stage
        self.health = health
        self.clock = clock
        self.failures = 0
        self.cause: str | None = None
        self._since = 0.0
        self._told = 0.0
        # 0 from the start: a running stage is seen by this series even before it ever retries.
        metrics.STAGE_RETRYING.labels(stage).set(0)

    def failed(self, exc: TransientError) -> float:
        """Record one failure; the seconds to wait before the next attempt."""
        now = self.clock()
        cause = failure_cause(exc)
        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2.0 ** min(self.failures, 16))
        if self.failures == 0:
            self._since = now
        self.failures += 1
        metrics.STAGE_RETRIES.labels(self.stage).inc()
        metrics.STAGE_RETRYING.labels(self.stage).set(1)
        if cause != self.cause or now - self._told >= STILL_FAILING_EVERY_S:
            again = "" if cause != self.cause else f" (still, {self.failures} attempts)"
            log.warning("%s: %s%s; retrying with backoff", self.stage, exc, again)
            self._told = now
        else:
            log.debug("%s: %s; retrying in %.1f s", self.stage, exc, delay)
        self.cause = cause
        if self.health is not None:
            self.health.waiting(self.stage, f"retrying ({self.failures} attempts): {exc}")
        return delay

    def succeeded(self) -> None:
        if self.failures:
            log.info(
                "%s: working again after %d failed attempts over %.0f s",
                self.stage,
                self.failures,
                self.clock() - self._since,
            )
            metrics.STAGE_RETRYING.labels(self.stage).set(0)
            if self.health is not None:
                self.health.waiting(self.stage, None)
        self.failures = 0
        self.cause = None


Beat = Callable[[str, int], None]


def run_stage(
    spec: StageSpec,
    config: Config,
    stop: StopSignal,
    options: RunOptions = RunOptions(),
    *,
    health: Health | None = None,
    guard: StallGuard | None = None,
    beat: Beat | None = None,
) -> int:
    """Build ``spec``'s stage and step it until ``stop`` (or ``options``); return items handled.

    ``beat(name, handled)`` is told after every step; ``guard`` times every step.
    """
    with contextlib.ExitStack() as held:
        wiring = Wiring(config, spec, held)
        if health is not None:
            wiring = replace(wiring, waiting=partial(health.waiting, spec.name))
        if guard is not None:
            wiring = replace(wiring, alive=partial(guard.alive, spec.name))
        stage = spec.build(wiring)
        held.callback(stage.close)  # the stage closes before what it was given
        gc_tuning.settle()
        step = stage.step if guard is None else guard.watch(spec.name, stage.step)
        handled = step_loop(spec.name, step, stop, options, Retries(spec.name, health), beat)
    log.info("%s stopped after %d items", spec.name, handled)
    return handled


def step_loop(
    name: str,
    step: Callable[[], int],
    stop: StopSignal,
    options: RunOptions,
    retries: Retries,
    beat: Beat | None = None,
) -> int:
    """Call ``step`` until ``stop`` or ``options`` end it; return the items handled. A transient
    error waits out ``retries``' backoff; any other is raised."""
    handled = 0
    idle_since = time.monotonic()
    while not stop.is_set():
        try:
            count = step()
        except Exception as exc:
            failure = transient(exc)
            if failure is None:
                raise
            stop.wait(retries.failed(failure))
            continue
        retries.succeeded()
        handled += count
        if beat is not None:
            beat(name, handled)
        if options.once or (options.max_items is not None and handled >= options.max_items):
            break
        if count:
            idle_since = time.monotonic()
            continue
        if options.idle_exit_s is not None and time.monotonic() - idle_since >= options.idle_exit_s:
            break
        stop.wait(IDLE_WAIT_S)
    return handled


def serve(spec: StageSpec, config: Config, options: RunOptions = RunOptions()) -> int:
    """Run one stage as its own process (``terra-xfer <stage>``): until SIGTERM/Ctrl-C or
    ``options``, serving /metrics, /healthz and /readyz on ``[metrics] port``; a step that runs
    longer than ``[metrics] stall_exit_s`` exits the process for its supervisor to restart."""
    stop = StopSignal()
    install_signal_handlers(stop)
    served = serving(config.metrics.port, host=config.metrics.address)
    with served as health, StallGuard(config.metrics.stall_exit_s) as guard:
        health.expect(spec.name)
        return run_stage(
            spec,
            config,
            stop,
            options,
            health=health,
            guard=guard,
            beat=lambda name, _n: health.beat(name),
        )


class Restarts:
    """The one restart policy, for a stage that ended on its own (crashed, fenced, stalled,
    killed): started again after 1 s, then 2, 4, … up to 60 s while it keeps ending early; back
    to 1 s once a run lasted a minute. Every restart is logged with its cause and counted."""

    def __init__(self, stage: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.stage = stage
        self.clock = clock
        self.count = 0
        self._delay = FIRST_RESTART_S
        self._started = clock()

    def started(self) -> None:
        self._started = self.clock()

    def ended(self, cause: str) -> float:
        """Record an end by ``cause``; the seconds to wait before starting the stage again."""
        if self.clock() - self._started >= HEALTHY_RUN_S:
            self._delay = FIRST_RESTART_S
        delay, self._delay = self._delay, min(MAX_RESTART_S, self._delay * 2)
        self.count += 1
        metrics.STAGE_RESTARTS.labels(self.stage, cause).inc()
        log.error(
            "stage %s %s; starting it again in %.0f s (restart %d)",
            self.stage,
            cause,
            delay,
            self.count,
        )
        return delay
