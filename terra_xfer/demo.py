"""The README's main command: start the embedded broker, create the topics, show them, stop.

It grows into the full gantry-night demo as the pipeline's stages land.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from terra_xfer.broker import EmbeddedBroker
from terra_xfer.config import load
from terra_xfer.errors import TerraXferError
from terra_xfer.logs import configure
from terra_xfer.topics import create_topics


@click.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True
)
@click.option("--keep-broker", is_flag=True, help="Leave the broker running afterwards.")
def demo(config_path: Path, keep_broker: bool) -> None:
    """Run the demo on the embedded broker."""
    configure("INFO", json_lines=False)
    config = load(config_path)
    b = config.broker
    node = EmbeddedBroker(b.port, b.data_dir, b.kafka_version, b.heap)
    began = time.monotonic()
    status = node.start(timeout_s=b.start_timeout_s)
    click.echo(
        f"broker up at {status.bootstrap} in {time.monotonic() - began:.1f} s "
        f"(data: {status.data_dir})"
    )
    try:
        for r in create_topics(config):
            what = "created" if r.created else "exists"
            click.echo(f"  {r.topic:<32} {r.partitions:>3} partitions  {what}")
        click.echo("\nNext: terra-xfer --config examples/demo.toml events tail files.arrived")
    finally:
        if not keep_broker:
            node.stop()
            click.echo("broker stopped (make demo KEEP=1 leaves it running)")


if __name__ == "__main__":
    try:
        demo()
    except TerraXferError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
