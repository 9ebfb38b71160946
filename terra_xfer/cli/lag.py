"""``terra-xfer lag``: how far behind each stage's consumer group is, in messages and seconds."""

from __future__ import annotations

import dataclasses
import json

import click

from terra_xfer.cli import State
from terra_xfer.lag import GroupLag, by_group, group_members, pipeline_lag
from terra_xfer.stages import registry


@click.command()
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: groups, their members, rows."
)
@click.option("--timeout", type=float, default=10.0, show_default=True, metavar="SECONDS")
@click.pass_obj
def lag(state: State, as_json: bool, timeout: float) -> None:
    """Per consumer group, topic and partition: the committed offset, the end (last stable
    offset, as read_committed consumers see it), the lag in messages, and the age of the oldest
    message the group has not consumed. Each group is measured from where it stands, however
    many groups read the topic. It never joins a group or commits: it reads offsets and, where a
    group is behind, the first record it has not consumed.

    The lag counts offsets from the oldest unconsumed record to the end, as Kafka does (a
    transaction's commit marker is one of them). A group whose remaining offsets hold only
    transaction markers (or aborted records) has consumed everything: lag 0, age 0, where
    kafka-consumer-groups --describe says 1.

    \b
    Examples:
      terra-xfer --config site.toml lag
      terra-xfer --config site.toml lag --json | jq '.rows[] | select(.lag > 0)'
    """
    config = state.with_broker()
    stages = list(registry.consumers())
    rows = pipeline_lag(config, stages, timeout)
    members = group_members(config, [s.consumer_group(config) for s in stages], timeout)
    groups = by_group(rows)
    if as_json:
        none = GroupLag(0, 0.0)
        doc = {
            "groups": {
                g: {
                    "members": n,
                    "lag": groups.get(g, none).messages,
                    "lag_seconds": groups.get(g, none).seconds,
                }
                for g, n in members.items()
            },
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(
        f"{'group':28} {'topic':36} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8} age_s"
    )
    for r in rows:
        committed = "-" if r.committed is None else str(r.committed)
        click.echo(
            f"{r.group:28} {r.topic:36} {r.partition:>4} {committed:>10} {r.end:>10}"
            f" {r.lag:>8} {r.lag_seconds:.1f}"
        )
    click.echo("members: " + ", ".join(f"{g}={n}" for g, n in members.items()))
