"""``terra-xfer batcher|monitor|state-keeper|ingest|deleter``: one pipeline stage each.

Each runs as its own consumer group, exactly as it would in its own Kubernetes Deployment, until
SIGTERM or Ctrl-C (or ``--once`` / ``--idle-exit`` for scripts and tests).
"""

from __future__ import annotations

import click

from terra_xfer.cli import State
from terra_xfer.cli.running import closing, idle_exit_option, once_option, run_stage


@click.command()
@once_option
@idle_exit_option
@click.pass_obj
def batcher(state: State, once: bool, idle_exit: float | None) -> None:
    """Window files.arrived into batches of [batcher] max_files (or max_wait_s) and submit each as
    one transfer task, idempotently (the submission id is recorded in Kafka first).

    \b
    Example:
      terra-xfer --config site.toml batcher
    """
    from consumers.backends import make_transfer
    from consumers.batcher import Batcher
    from consumers.state.view import StateFollower

    config = state.config
    backend = make_transfer(config)
    view = StateFollower(config, config.status.index_path.with_name("batcher-view.sqlite"))
    stage = Batcher(config, backend, view)

    close = closing(stage, view, backend)
    run_stage("batcher", stage.step, close, once=once, idle_exit=idle_exit)


@click.command()
@once_option
@idle_exit_option
@click.pass_obj
def monitor(state: State, once: bool, idle_exit: float | None) -> None:
    """Follow every transfer task to its end and publish one outcome per file (files.transferred);
    retry failed files with backoff up to [monitor] max_attempts.

    \b
    Example:
      terra-xfer --config site.toml monitor
    """
    from consumers.backends import make_transfer
    from consumers.monitor import Monitor

    backend = make_transfer(state.config)
    stage = Monitor(state.config, backend)

    close = closing(stage, backend)
    run_stage("monitor", stage.step, close, once=once, idle_exit=idle_exit)


@click.command(name="state-keeper")
@once_option
@idle_exit_option
@click.pass_obj
def state_keeper(state: State, once: bool, idle_exit: float | None) -> None:
    """Fold every file event into the compacted files.state topic (its only writer).

    \b
    Example:
      terra-xfer --config site.toml state-keeper
    """
    from consumers.state.keeper import StateKeeper

    stage = StateKeeper(state.config)
    run_stage("state-keeper", stage.step, stage.close, once=once, idle_exit=idle_exit)


@click.command()
@once_option
@idle_exit_option
@click.pass_obj
def ingest(state: State, once: bool, idle_exit: float | None) -> None:
    """Register every transferred file in the catalog ([catalog] backend: local or clowder).

    \b
    Example:
      TERRA_XFER_CLOWDER_KEY=... terra-xfer --config site.toml ingest
    """
    from consumers.backends import make_catalog
    from consumers.ingest import Ingest

    stage = Ingest(state.config, make_catalog(state.config))
    run_stage("ingest", stage.step, stage.close, once=once, idle_exit=idle_exit)


@click.command()
@once_option
@idle_exit_option
@click.pass_obj
def deleter(state: State, once: bool, idle_exit: float | None) -> None:
    """Remove transferred files from the cache once the destination copy is confirmed; refuse,
    with the reason, anything modified, moved, symlinked or unconfirmed. [deleter] dry_run only
    reports.

    \b
    Example:
      terra-xfer --config site.toml deleter
    """
    from consumers.backends import make_transfer
    from consumers.deleter import Deleter

    if not state.config.deleter.enabled:
        raise click.UsageError("[deleter] enabled is false: nothing to run")
    backend = make_transfer(state.config)
    stage = Deleter(state.config, backend)

    close = closing(stage, backend)
    run_stage("deleter", stage.step, close, once=once, idle_exit=idle_exit)


@click.command()
@once_option
@idle_exit_option
@click.pass_obj
def sweeper(state: State, once: bool, idle_exit: float | None) -> None:
    """Walk the whitelisted cache at start and every [sweeper] interval_s; re-queue files older
    than min_age_s that never transferred, and report files stuck in one state.

    \b
    Example:
      terra-xfer --config site.toml sweeper --once
    """
    from consumers.state.view import StateFollower
    from producers.sweeper import Sweeper

    config = state.config
    view = StateFollower(config, config.status.index_path.with_name("sweeper-view.sqlite"))
    stage = Sweeper(config, view)

    close = closing(stage, view)
    run_stage("sweeper", stage.step, close, once=once, idle_exit=idle_exit)
