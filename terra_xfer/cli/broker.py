"""``terra-xfer broker``: the embedded Kafka node for local use."""

from __future__ import annotations

import time

import click

from terra_xfer.broker import EmbeddedBroker
from terra_xfer.cli import State
from terra_xfer.config import Config


def embedded(config: Config) -> EmbeddedBroker:
    b = config.broker
    return EmbeddedBroker(b.port, b.data_dir, b.kafka_version, b.heap)


@click.group()
def broker() -> None:
    """Run the embedded single-node Kafka broker (KRaft mode, 127.0.0.1 only).

    Kafka's jars are resolved once from Maven Central into ~/.cache/terra-xfer and reused; the
    broker's data, log and pidfile live in [broker] data_dir.

    \b
    Example:
      terra-xfer broker start && terra-xfer broker status
    """


@broker.command()
@click.pass_obj
def start(state: State) -> None:
    """Start the broker (formatting its storage on first start) and wait until it answers."""
    node = embedded(state.config)
    began = time.monotonic()
    status = node.start(timeout_s=state.config.broker.start_timeout_s)
    click.echo(
        f"broker running: pid {status.pid}, bootstrap {status.bootstrap} "
        f"({time.monotonic() - began:.1f} s), data {status.data_dir}"
    )


@broker.command()
@click.pass_obj
def stop(state: State) -> None:
    """Stop the broker with SIGTERM and wait for it to exit."""
    node = embedded(state.config)
    click.echo("broker stopped" if node.stop() else "broker was not running")


@broker.command()
@click.pass_obj
def status(state: State) -> None:
    """Say whether the broker runs and answers; exit code 1 when it does not."""
    s = embedded(state.config).status()
    if s.running:
        answer = "answering" if s.answering else "NOT answering"
        click.echo(f"broker running: pid {s.pid}, {s.bootstrap} {answer}, data {s.data_dir}")
    else:
        click.echo(f"broker not running (data {s.data_dir})")
    if not (s.running and s.answering):
        raise SystemExit(1)
