"""``terra-xfer gantry``: the gantry producer (xferlog or nas.log into files.arrived)."""

from __future__ import annotations

import inspect
from datetime import datetime
from zoneinfo import ZoneInfo

import click

from producers.gantry.service import GantryProducer, log_source
from producers.gantry.tailer import checkpoint_at_end, checkpoint_at_time
from producers.gantry.xferlog import time_extractor
from terra_xfer.cli import State
from terra_xfer.cli.stage_command import idle_exit_option, once_option, run
from terra_xfer.stages import registry

# The registry entry each log is followed by.
SOURCES = {"xferlog": registry.spec("gantry"), "nas_log": registry.spec("gantry-nas")}
source_option = click.option(
    "--source",
    type=click.Choice(list(SOURCES)),
    default="xferlog",
    show_default=True,
    help="Which log to follow: [gantry] xferlog or [gantry] nas_log.",
)


@click.group(
    invoke_without_command=True,
    help=inspect.cleandoc(registry.spec("gantry").help),
    short_help=registry.spec("gantry").summary,
)
@source_option
@once_option
@idle_exit_option
@click.pass_context
def gantry(ctx: click.Context, source: str, once: bool, idle_exit: float | None) -> None:
    if ctx.invoked_subcommand is None:
        run(ctx.obj, SOURCES[source], once, idle_exit)


@gantry.command()
@source_option
@click.option("--from-end", is_flag=True, help="Skip everything logged so far.")
@click.option(
    "--from-time",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]),
    help="Start at the first line logged at or after this time (the log's zone).",
)
@click.pass_obj
def reseat(state: State, source: str, from_end: bool, from_time: datetime | None) -> None:
    """Move the producer's committed position when it cannot find it (CheckpointLostError).

    The new position is committed with the producer's transactional id, which fences a producer
    still running on the old one: restart it afterwards.
    """
    if from_end == (from_time is not None):
        raise click.UsageError("give exactly one of --from-end and --from-time")
    config = state.config
    src = log_source(config, source)
    if from_end:
        checkpoint = checkpoint_at_end(src.path)
    else:
        assert from_time is not None
        when = from_time.replace(tzinfo=ZoneInfo(config.gantry.timezone))
        checkpoint = checkpoint_at_time(src.path, when, time_extractor(config.gantry.timezone))
    producer = GantryProducer(config, SOURCES[source], src)
    try:
        producer.reseat(checkpoint)
    finally:
        producer.close()
    click.echo(f"{source}: position set to {checkpoint.name} byte {checkpoint.offset}")
