"""``terra-xfer topics``: the topic catalogue, created idempotently."""

from __future__ import annotations

import click

from terra_xfer.cli import State
from terra_xfer.topics import CATALOGUE, create_topics


@click.group()
def topics() -> None:
    """Create and show the pipeline's topics (names, partitions, configs from one catalogue).

    \b
    Example:
      terra-xfer topics create && terra-xfer topics list
    """


@topics.command()
@click.pass_obj
def create(state: State) -> None:
    """Create missing topics and align configs of existing ones; safe to run again."""
    for r in create_topics(state.with_broker()):
        what = "created" if r.created else "exists"
        extra = f", configs updated: {', '.join(r.updated_configs)}" if r.updated_configs else ""
        click.echo(f"{r.topic:<32} {r.partitions:>3} partitions  {what}{extra}")


@topics.command(name="list")
@click.pass_obj
def list_(state: State) -> None:
    """Print the catalogue: topic, key, value records, partitions, cleanup policy."""
    cfg = state.config
    for s in CATALOGUE:
        policy = s.configs.get("cleanup.policy", "delete")
        click.echo(
            f"{cfg.topic(s.name):<32} {s.partitions(cfg.kafka.partitions):>3}  {policy:<8} "
            f"key={s.key}  value={s.value}"
        )
