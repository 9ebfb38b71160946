"""``terra-xfer danforth``: the Danforth producer (LemnaTec snapshots into files.arrived)."""

from __future__ import annotations

import click

from terra_xfer.cli import State
from terra_xfer.cli.running import idle_exit_option, once_option, run_stage


@click.command()
@once_option
@idle_exit_option
@click.pass_obj
def danforth(state: State, once: bool, idle_exit: float | None) -> None:
    """Poll the LemnaTec database for completed snapshots and ship each one, metadata first.

    Every [danforth] poll_s, the snapshots after the committed position are read in id order;
    each image blob becomes a PNG under [danforth] cache_root (snapshot<id>/), the snapshot's
    metadata a snapshot<id>_metadata.json, and all of it one FileArrived per file, committed in
    one Kafka transaction with the new position. A missing or corrupt blob is a dead letter and
    the snapshot is marked incomplete. The database password comes only from the environment
    (TERRA_XFER_DANFORTH_PASSWORD).

    \b
    Example:
      TERRA_XFER_DANFORTH_PASSWORD=... terra-xfer --config site.toml danforth
    """
    from producers.danforth.service import DanforthProducer

    producer = DanforthProducer(state.config)
    run_stage("danforth", producer.step, producer.close, once=once, idle_exit=idle_exit)
