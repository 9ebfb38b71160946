"""``terra-xfer gantry``: the gantry producer (xferlog or nas.log into files.arrived)."""

from __future__ import annotations

from datetime import datetime

import click

from producers.gantry.service import GantryProducer, log_source
from producers.gantry.tailer import checkpoint_at_end, checkpoint_at_time
from producers.gantry.xferlog import time_extractor
from terra_xfer.cli import State
from terra_xfer.cli.running import idle_exit_option, once_option, run_stage

source_option = click.option(
    "--source",
    type=click.Choice(["xferlog", "nas_log"]),
    default="xferlog",
    show_default=True,
    help="Which log to follow: [gantry] xferlog or [gantry] nas_log.",
)


@click.group(invoke_without_command=True)
@source_option
@once_option
@idle_exit_option
@click.pass_context
def gantry(ctx: click.Context, source: str, once: bool, idle_exit: float | None) -> None:
    """Tail the FTP server's xferlog and emit one FileArrived per completed whitelisted upload.

    Follows the log through daily rotation (xferlog-YYYYMMDD, later gzipped) and copytruncate;
    events and the log position are committed in one Kafka transaction, so a restart resumes
    exactly where the last commit ended. Malformed lines and files missing from the cache go to
    the dead-letter topic with the reason.

    \b
    Examples:
      terra-xfer --config site.toml gantry
      terra-xfer --config site.toml gantry --source nas_log
      terra-xfer --config site.toml gantry reseat --from-end
    """
    if ctx.invoked_subcommand is not None:
        return
    state: State = ctx.obj
    producer = GantryProducer(state.config, log_source(state.config, source))
    run_stage(f"gantry {source}", producer.step, producer.close, once=once, idle_exit=idle_exit)


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
        from zoneinfo import ZoneInfo

        when = from_time.replace(tzinfo=ZoneInfo(config.gantry.timezone))
        checkpoint = checkpoint_at_time(src.path, when, time_extractor(config.gantry.timezone))
    producer = GantryProducer(config, src)
    try:
        producer.reseat(checkpoint)
    finally:
        producer.close()
    click.echo(f"{source}: position set to {checkpoint.name} byte {checkpoint.offset}")
