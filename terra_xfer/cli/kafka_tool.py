"""``terra-xfer kafka-tool``: Kafka's own console tools, from the embedded broker's jars."""

from __future__ import annotations

import click

from terra_xfer.cli import State
from terra_xfer.kafka_tools import TOOLS, run_configured


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

    \b
    Example (replay the ingest stage from the start; stop the stage first):
      terra-xfer kafka-tool consumer-groups \\
          --group terra.ingest --reset-offsets --to-earliest --all-topics --execute
    """
    config = state.with_broker()
    done = run_configured(config.kafka, config.broker.kafka_version, tool, args)
    raise SystemExit(done.returncode)
