"""``terra-xfer up``: every stage of the registry that the configuration enables, each in a process
of its own under a supervisor that restarts what ends (or, with ``--threads``, each in a thread of
this one), serving their metrics, /healthz and /readyz on one port."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Mapping

import click
from confluent_kafka import KafkaException

from consumers.state.status_index import StatusIndex
from terra_xfer import metrics
from terra_xfer.cli import State
from terra_xfer.cli.stage_command import refuse_bad_credentials
from terra_xfer.config import Config
from terra_xfer.deadletters import count_dead_letters
from terra_xfer.errors import TerraXferError
from terra_xfer.lag import GroupLag, by_group, pipeline_lag
from terra_xfer.live_line import LiveLine
from terra_xfer.logs import JsonFormatter
from terra_xfer.metrics_http import Health, serving
from terra_xfer.stages import registry
from terra_xfer.stages.host import StopSignal, install_signal_handlers
from terra_xfer.stages.stall_guard import StallGuard
from terra_xfer.stages.supervisor import Supervisor
from terra_xfer.stages.threads import ThreadedStages

log = logging.getLogger(__name__)
SHUTDOWN_BUDGET_S = 10.0
LOG_EVERY_S = 10.0  # the progress line's interval off a terminal
SLOW_EVERY_S = 5.0  # bytes, lag and dead letters: every line when lines are 10 s apart


class Progress:
    """Files per state, files DONE per second, bytes moved, consumer lag per stage and dead
    letters: the status index as the indexer keeps it (:mod:`consumers.state.indexer`, one of
    the stages ``up`` runs) and the lag as ``terra-xfer lag`` measures it (:mod:`terra_xfer.lag`)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        """Reads nothing from Kafka: a broker that is away shows in the lines, never stops ``up``."""
        self.config = config
        self.clock = clock
        self.index = StatusIndex(config.status.index_path)
        self.stages = list(registry.consumers())
        self.started = clock()
        # The rate counts files DONE from the first line on, once the index has read what
        # earlier runs did: not those of earlier runs.
        self.last_done: int | None = None
        self.last_at = self.started
        self.slow_at: float | None = None
        self.slow = ""

    def line(self, waiting: dict[str, str]) -> str:
        """One status line; bytes, lag and dead letters (costlier to read) at most every
        ``SLOW_EVERY_S``; the stages that wait, and why."""
        try:
            if self.slow_at is None or self.clock() - self.slow_at >= SLOW_EVERY_S:
                self.slow_at = self.clock()
                self.slow = self._slow_part()
        except (TerraXferError, KafkaException) as exc:
            self.slow = f"waiting for Kafka: {exc}"
        counts = self.index.counts_by_state()
        done = counts.get("DONE", 0)
        now = self.clock()
        before = done if self.last_done is None else self.last_done
        rate = max(0, done - before) / max(now - self.last_at, 1e-6)
        self.last_done, self.last_at = done, now
        states = " ".join(f"{s}={n}" for s, n in sorted(counts.items())) or "no files yet"
        line = f"[{now - self.started:6.0f}s] {states} | {rate:.0f} files/s | {self.slow}"
        return line + "".join(f" | {name} {why}" for name, why in sorted(waiting.items()))

    def _slow_part(self) -> str:
        moved = self.index.bytes_transferred()
        rows = pipeline_lag(self.config, self.stages, timeout_s=5)
        names = {s.consumer_group(self.config): s.name for s in self.stages}
        lag = lag_text({names.get(g, g): v for g, v in by_group(rows).items()})
        dead = sum(count_dead_letters(self.config, timeout_s=5).values())
        return f"{moved / 1e6:.1f} MB moved | {lag} | dead letters {dead}"

    def close(self) -> None:
        self.index.close()


def lag_text(lags: Mapping[str, GroupLag]) -> str:
    """``lag 0`` when every stage has consumed all it can read, else each stage behind with its
    messages and the age of its oldest: ``lag ingest:500/3m deleter:2/4s``."""
    behind = [f"{name}:{g.messages}/{_age(g.seconds)}" for name, g in lags.items() if g.messages]
    return "lag " + (" ".join(behind) if behind else "0")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


class Runner:
    """What ``up`` watches, whichever way the stages run: a tick, the items each stage handled,
    and a stop."""

    def __init__(
        self,
        config: Config,
        stop: StopSignal,
        health: Health,
        metrics_dir: str | None,
        live: LiveLine | None = None,
    ) -> None:
        """``metrics_dir``: each stage in a process of its own, writing its metrics there;
        None: each in a thread of this process. ``live``: the stage processes' log lines are
        printed above this progress line."""
        self.health = health
        specs = registry.running(config)
        for spec in specs:
            health.expect(spec.name)
        self.supervisor: Supervisor | None = None
        self.threads: ThreadedStages | None = None
        self.guard: StallGuard | None = None
        self.stop = stop
        if metrics_dir is not None:
            relay = None if live is None else _relay_to(live)
            self.supervisor = Supervisor(
                config,
                specs,
                log_setup=_log_setup(),
                metrics_dir=metrics_dir,
                on_step=health.beat,
                relay=relay,
            )
        else:
            self.guard = StallGuard(config.metrics.stall_exit_s)
            self.threads = ThreadedStages(config, specs, stop, health, self.guard)

    def start(self) -> Runner:
        if self.supervisor is not None:
            self.supervisor.start()
        if self.threads is not None and self.guard is not None:
            self.guard.start()
            self.threads.start()
        return self

    def tick(self, seconds: float) -> None:
        """Wait ``seconds`` (restarting what ended, in processes) or until stopped."""
        if self.supervisor is not None:
            deadline = time.monotonic() + seconds
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.supervisor.tick(min(0.2, max(0.0, deadline - time.monotonic())))
        else:
            self.stop.wait(seconds)

    @property
    def waiting(self) -> dict[str, str]:
        """Why each waiting stage waits."""
        if self.supervisor is not None:
            return self.supervisor.waiting
        return self.health.waiting_now()

    @property
    def handled(self) -> dict[str, int]:
        if self.supervisor is not None:
            return self.supervisor.handled
        assert self.threads is not None
        return self.threads.handled

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop(SHUTDOWN_BUDGET_S)
        if self.threads is not None:
            try:
                self.threads.join(SHUTDOWN_BUDGET_S)
            finally:
                if self.guard is not None:
                    self.guard.stop()


def run_up(
    config: Config, exit_when_idle: float | None, show: bool, processes: bool = True
) -> dict[str, int]:
    """Run until a signal (or until every stage was idle for ``exit_when_idle`` seconds); return
    the items each stage handled."""
    stop = StopSignal()
    install_signal_handlers(stop)
    with metrics.shared_dir() as metrics_dir:
        served = metrics.gathered(metrics_dir) if processes else metrics.REGISTRY
        live = LiveLine(sys.stderr) if show and sys.stderr.isatty() else None
        with (
            serving(config.metrics.port, served, config.metrics.address) as health,
            live if live is not None else contextlib.nullcontext(),
        ):
            dir_ = metrics_dir if processes else None
            runner = Runner(config, stop, health, dir_, live).start()
            progress = Progress(config) if show else None
            try:
                _watch(runner, stop, exit_when_idle, progress, live)
            finally:
                began = time.monotonic()
                runner.close()
                log.info("all stages stopped in %.1f s", time.monotonic() - began)
                if progress is not None:
                    progress.close()
            return runner.handled


def _relay_to(live: LiveLine) -> Callable[[bytes], None]:
    """Stage processes' stderr lines, printed above the live line."""

    def relay(data: bytes) -> None:
        live.write(data.decode("utf-8", "replace"))

    return relay


def _log_setup() -> tuple[str, bool | None]:
    """The level and format of this process's logging, for the stage processes to use."""
    root = logging.getLogger()
    json_lines = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return logging.getLevelName(root.level), json_lines


def _watch(
    runner: Runner,
    stop: StopSignal,
    exit_when_idle: float | None,
    progress: Progress | None,
    live: LiveLine | None,
) -> None:
    """Tick every second (an idle exit comes on time); show the progress on ``live`` (a
    terminal) at every tick, or log it every ``LOG_EVERY_S`` without one."""
    last: dict[str, int] = {}
    idle_since = time.monotonic()
    logged_at: float | None = None
    while not stop.is_set():
        runner.tick(1.0)
        handled = runner.handled
        if handled != last:
            last, idle_since = handled, time.monotonic()
        if progress is not None and live is not None:
            live.show(progress.line(runner.waiting))
        elif progress is not None and (
            logged_at is None or time.monotonic() - logged_at >= LOG_EVERY_S
        ):
            logged_at = time.monotonic()
            log.info("%s", progress.line(runner.waiting))
        if exit_when_idle is not None and time.monotonic() - idle_since >= exit_when_idle:
            log.info("every stage idle for %.0f s: stopping", exit_when_idle)
            break


@click.command()
@click.option(
    "--exit-when-idle",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Stop once no stage has had work for this long (drains, then exits).",
)
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option(
    "--processes/--threads",
    default=True,
    show_default=True,
    help="Each stage in a process of its own (uses every core), or every stage as a thread of "
    "this one (least memory). Both serve the same metrics on the same port.",
)
@click.pass_obj
def up(state: State, exit_when_idle: float | None, quiet: bool, processes: bool) -> None:
    """Run the whole pipeline: every stage the configuration enables (gantry producer, batcher,
    monitor, state keeper, ingest, deleter, sweeper, and the nas.log and Danforth producers when
    configured), each with its own consumer group, exactly as `terra-xfer <stage>` runs it on
    Kubernetes. Each stage runs in a process of its own, which this one supervises: a stage that
    ends (crashed, fenced, stalled, killed) is started again with backoff, and no stage outlives
    this process, even when it is killed with SIGKILL. It serves the stages' metrics, /healthz
    and /readyz on [metrics] port. With --threads they all run as threads of this process (about
    half the files/s on two cores, and about two thirds of the memory).

    With no broker reachable, every stage waits and retries until it answers. Ctrl-C or SIGTERM
    stops every stage within 10 s with its work committed; running it again resumes where it
    stopped. On a terminal it shows live progress; otherwise it logs a line every 10 s.

    \b
    Example:
      terra-xfer up --config site.toml
    """
    refuse_bad_credentials(state)
    handled = run_up(state.config, exit_when_idle, not quiet, processes)
    click.echo("handled: " + ", ".join(f"{k}={v}" for k, v in handled.items()), err=True)
