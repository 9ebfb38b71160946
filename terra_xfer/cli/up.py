"""``terra-xfer up``: every stage in a process of its own (or, with ``--threads``, all in this one),
each with its own consumer group."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import click

from terra_xfer import metrics
from terra_xfer.cli import State
from terra_xfer.cli.running import refuse_bad_credentials
from terra_xfer.config import Config
from terra_xfer.logs import JsonFormatter
from terra_xfer.metrics_http import serving, watched
from terra_xfer.runner import ProcessRunner, StageRunner
from terra_xfer.service import install_signal_handlers
from terra_xfer.stages import gc_tuning as heap
from terra_xfer.stages.stall_guard import StepWatchdog

log = logging.getLogger(__name__)
SHUTDOWN_BUDGET_S = 10.0


class Progress:
    """Files per state, files/s, bytes and dead letters, from the status index."""

    def __init__(self, config: Config) -> None:
        from consumers.state.view import StateFollower

        self.config = config
        self.view = StateFollower(config, config.status.index_path)
        self.started = time.monotonic()
        self.last_done = 0
        self.last_at = self.started
        self.calls = 0
        self.slow = ""

    def line(self, runner: StageRunner | ProcessRunner) -> str:
        """One status line; lag, bytes and dead letters (costlier to read) every 5th call."""
        self.view.refresh(100_000, 0.2)
        counts = self.view.index.counts_by_state()
        done = counts.get("DONE", 0)
        now = time.monotonic()
        rate = (done - self.last_done) / max(now - self.last_at, 1e-6)
        self.last_done, self.last_at = done, now
        if self.calls % 5 == 0:
            self.slow = self._slow_part()
        self.calls += 1
        states = " ".join(f"{s}={n}" for s, n in sorted(counts.items())) or "no files yet"
        return f"[{now - self.started:6.0f}s] {states} | {rate:.0f} files/s | {self.slow}"

    def _slow_part(self) -> str:
        from terra_xfer.deadletters import count_dead_letters
        from terra_xfer.lag import total_lag

        moved = sum(int(line["bytes_transferred"]) for line in self.view.index.report())
        lag = " ".join(f"{stage}:{n}" for stage, n in total_lag(self.config).items())
        dead = sum(count_dead_letters(self.config, timeout_s=5).values())
        return f"{moved / 1e6:.1f} MB moved | lag {lag} | dead letters {dead}"

    def close(self) -> None:
        self.view.close()


def run_up(
    config: Config, exit_when_idle: float | None, show: bool, processes: bool = True
) -> dict[str, int]:
    """Run until a signal (or until every stage was idle for ``exit_when_idle`` seconds)."""
    if processes:
        return _run_processes(config, exit_when_idle, show)
    from terra_xfer.pipeline import build

    stop = threading.Event()
    install_signal_handlers(stop)
    watchdog = StepWatchdog(config.metrics.stall_exit_s).start()
    with build(config) as stages, serving(config.metrics.port) as health:
        heap.settle()
        runner = StageRunner(watched(stages, health, watchdog)).start()
        progress = Progress(config) if show else None
        try:
            _watch(runner, stop, exit_when_idle, progress)
        finally:
            began = time.monotonic()
            runner.join(close=True, timeout_s=SHUTDOWN_BUDGET_S)
            watchdog.stop()
            log.info("all stages stopped in %.1f s", time.monotonic() - began)
            if progress is not None:
                progress.close()
        return {t.name: t.handled for t in runner.threads}


def _run_processes(config: Config, exit_when_idle: float | None, show: bool) -> dict[str, int]:
    """``run_up`` with each stage in a process of its own; this one supervises and serves
    /healthz, /readyz (ready once every stage has stepped) and /metrics: the stages' series,
    which they write to files in a private directory that lives as long as this call."""
    from terra_xfer.pipeline import stage_names

    stop = threading.Event()
    install_signal_handlers(stop)
    names = stage_names(config)
    with (
        metrics.shared_dir() as metrics_dir,
        serving(config.metrics.port, metrics.gathered(metrics_dir)) as health,
    ):
        for name in names:
            health.expect(name)
        runner = ProcessRunner(
            config, names, _log_setup(), on_step=health.beat, metrics_dir=metrics_dir
        ).start()
        progress = Progress(config) if show else None
        try:
            _watch(runner, stop, exit_when_idle, progress)
        finally:
            began = time.monotonic()
            runner.join(timeout_s=SHUTDOWN_BUDGET_S)
            log.info("all stages stopped in %.1f s", time.monotonic() - began)
            if progress is not None:
                progress.close()
        return {t.name: t.handled for t in runner.threads}


def _log_setup() -> tuple[str, bool | None]:
    """The level and format of this process's logging, for the stage processes to use."""
    root = logging.getLogger()
    json_lines = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return logging.getLevelName(root.level), json_lines


def _watch(
    runner: StageRunner | ProcessRunner,
    stop: threading.Event,
    exit_when_idle: float | None,
    progress: Progress | None,
) -> None:
    last: list[int] = []
    idle_since = time.monotonic()
    tty = sys.stderr.isatty()
    while not stop.is_set() and not runner.stop.is_set():
        stop.wait(1.0 if tty else 10.0)
        handled = [t.handled for t in runner.threads]
        if handled != last:
            last, idle_since = handled, time.monotonic()
        if progress is not None:
            text = progress.line(runner)
            if tty:
                click.echo("\r" + text[:200].ljust(200), nl=False, err=True)
            else:
                log.info("%s", text)
        if exit_when_idle is not None and time.monotonic() - idle_since >= exit_when_idle:
            log.info("every stage idle for %.0f s: stopping", exit_when_idle)
            break
    if tty and progress is not None:
        click.echo("", err=True)


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
    """Run the whole pipeline: gantry producer, batcher, monitor, state keeper, ingest, deleter
    and sweeper, each with its own consumer group, as on Kubernetes. Each stage runs in a process
    of its own, which this one supervises, serving their metrics, /healthz and /readyz; with
    --threads they all run as threads of this process (about half the files/s on two cores, and
    about two thirds of the memory).

    Ctrl-C or SIGTERM stops every stage within 10 s with its work committed; running it again
    resumes where it stopped. On a terminal it shows live progress; otherwise it logs a line every
    10 s.

    \b
    Example:
      terra-xfer --config site.toml up
    """
    refuse_bad_credentials()
    handled: dict[str, Any] = run_up(state.config, exit_when_idle, not quiet, processes)
    click.echo("handled: " + ", ".join(f"{k}={v}" for k, v in handled.items()), err=True)
