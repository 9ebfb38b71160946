"""A stage's consumer is a static member of its group, named like its transactional producer, so
an instance restarted after a crash takes its partitions straight back (no session to wait out)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from terra_xfer.config import KafkaConfig
from terra_xfer.kafka import instance_id, member_consumer

pytestmark = pytest.mark.broker


def _assigned(consumer: Consumer, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        consumer.poll(0.2)
        if consumer.assignment():
            return len(consumer.assignment())
    raise AssertionError("no partitions assigned")


def _members(admin: AdminClient, group: str) -> list[str | None]:
    found = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    return [m.group_instance_id for m in found.members]


def test_a_restarted_instance_takes_its_own_place(
    kafka_config: KafkaConfig,
    admin: AdminClient,
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
) -> None:
    topic, group = make_topic(partitions=3), unique("g")
    name = f"{group}-{instance_id(kafka_config)}"
    first = member_consumer(kafka_config, group)
    first.subscribe([topic])
    assert _assigned(first) == 3
    first.close()  # a static member does not leave: its place waits for it
    assert _members(admin, group) == [name]
    again = member_consumer(kafka_config, group)
    try:
        again.subscribe([topic])
        assert _assigned(again) == 3
        assert _members(admin, group) == [name]
    finally:
        again.close()
