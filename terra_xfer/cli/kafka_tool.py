"""``terra-xfer kafka-tool``: Kafka's own console tools, from the embedded broker's jars."""

from __future__ import annotations

import click

from terra_xfer.cli import State
from terra_xfer.config import KafkaConfig
from terra_xfer.kafka_tools import (
    NEW_GROUP_FLAG,
    TOOLS,
    existing_groups,
    named_groups,
    run_configured,
)


@click.command(
    name="kafka-tool", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("tool", type=click.Choice(sorted(TOOLS)))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def kafka_tool(state: State, tool: str, args: tuple[str, ...]) -> None:
    """Run one of Kafka's console tools exactly as kafka-<TOOL>.sh would (same jars as the broker).

    The cluster is the config's: --bootstrap-server is added when not given, and on a SASL or TLS
    cluster the credentials go to the tool in a --command-config file readable only by you and
    removed when it exits.

    consumer-groups refuses a --group the cluster does not have (exit 2, naming the groups it
    has), where Kafka's tool would describe it as empty or reset it and exit 0. Add
    --new-group to set offsets for a group before its first start.

    \b
    Example (replay the ingest stage from the start; stop the stage first):
      terra-xfer kafka-tool consumer-groups \\
          --group terra.ingest --reset-offsets --to-earliest --all-topics --execute
    """
    config = state.with_broker()
    if tool == "consumer-groups":
        args = _known_groups_only(config.kafka, args)
    done = run_configured(config.kafka, config.broker.kafka_version, tool, args)
    raise SystemExit(done.returncode)


def _known_groups_only(kafka: KafkaConfig, args: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` without ``NEW_GROUP_FLAG``; exits 2 when they name a group the cluster lacks."""
    if NEW_GROUP_FLAG in args:
        return tuple(a for a in args if a != NEW_GROUP_FLAG)
    named = named_groups(args)
    if not named:
        return args
    have = existing_groups(kafka)
    missing = [g for g in named if g not in have]
    if missing:
        listed = ", ".join(sorted(have)) or "none"
        click.echo(
            f"kafka-tool: no consumer group {', '.join(map(repr, missing))} on"
            f" {kafka.bootstrap_servers} (its groups: {listed}); add {NEW_GROUP_FLAG} to run"
            " anyway, e.g. to set offsets for a group before its first start",
            err=True,
        )
        raise SystemExit(2)
    return args
