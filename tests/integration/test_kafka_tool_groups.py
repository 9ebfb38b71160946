"""`terra-xfer kafka-tool consumer-groups` on the real broker refuses a group the cluster lacks.

Kafka's own tool describes a group it does not have as an empty one and exits 0, and resets the
offsets of a misspelt group as readily as the real one's: a replay runbook with a typo would
report success and replay nothing. The wrapper names the groups the cluster has instead.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner
from confluent_kafka import TopicPartition

from terra_xfer.cli import cli
from terra_xfer.config import Config
from terra_xfer.kafka import make_consumer
from terra_xfer.kafka_tools import existing_groups, named_groups
from tests.kafka_read import env_for

pytestmark = pytest.mark.broker


def committed_group(config: Config, group: str, topic: str) -> None:
    """Make ``group`` exist on the cluster: offset 0 of ``topic`` committed, no member left."""
    consumer = make_consumer(config.kafka, group)
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()


def tool(config: Config, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["kafka-tool", "consumer-groups", *args], env=env_for(config))
    return result.exit_code, result.output


def test_a_group_the_cluster_lacks_is_refused_with_the_groups_it_has(
    pipeline_config: Config,
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
) -> None:
    topic = make_topic()
    real, typo = unique("terra.ingest"), unique("terra.ingets")
    committed_group(pipeline_config, real, topic)
    assert real in existing_groups(pipeline_config.kafka)

    code, output = tool(
        pipeline_config,
        *("--group", typo, "--topic", topic, "--reset-offsets", "--to-earliest", "--execute"),
    )
    assert code == 2
    assert f"no consumer group {typo!r}" in output
    assert real in output  # among the groups it has
    assert typo not in existing_groups(pipeline_config.kafka)  # nothing was reset or made

    code, output = tool(pipeline_config, "--describe", f"--group={real}")
    assert code == 0, output

    code, output = tool(pipeline_config, "--describe", "--group", typo, "--new-group")
    assert code == 0, output  # Kafka's own answer for a group it lacks, asked for explicitly


def test_the_groups_named_in_either_spelling() -> None:
    args = ["--describe", "--group", "a", "--group=b", "--members", "--group"]
    assert named_groups(args) == ["a", "b"]
    assert named_groups(["--list"]) == []
