"""The Avro contract and transactions through the real broker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from schemas.codec import Codec, current_schemas
from terra_xfer.cli import cli
from terra_xfer.config import Config, KafkaConfig
from terra_xfer.kafka import PARTITIONER, TxProducer, make_consumer
from terra_xfer.topics import CATALOGUE, create_topics
from tests.kafka_read import wait_for
from tests.samples import KEY, sample

pytestmark = pytest.mark.broker


def drain(consumer: Consumer, expect: int, deadline_s: float = 30.0) -> list[tuple[bytes, bytes]]:
    """Poll until ``expect`` messages arrived or the deadline passed; return (key, value) pairs."""
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < expect and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value()))
    return got


def test_transactional_round_trip_of_every_record(
    kafka_config: KafkaConfig, make_topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    topic = make_topic(partitions=3)
    codec = Codec()
    producer = TxProducer(kafka_config, unique("tx"))
    with producer.transaction():
        for name in sorted(current_schemas()):
            producer.produce(topic, codec.encode(name, sample(name)), key=name)
    consumer = make_consumer(kafka_config, unique("g"))
    consumer.subscribe([topic])
    try:
        got = drain(consumer, len(current_schemas()))
    finally:
        consumer.close()
    decoded = {key.decode(): codec.decode(value) for key, value in got}
    assert decoded == {name: (name, sample(name)) for name in current_schemas()}


def test_aborted_transaction_is_invisible_to_read_committed(
    kafka_config: KafkaConfig, make_topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    topic = make_topic()
    codec = Codec()
    producer = TxProducer(kafka_config, unique("tx"))
    with pytest.raises(RuntimeError), producer.transaction():
        producer.produce(topic, codec.encode("Checkpoint", sample("Checkpoint")), key=b"aborted")
        producer.flush()
        raise RuntimeError("crash inside the transaction")
    with producer.transaction():
        producer.produce(topic, codec.encode("Checkpoint", sample("Checkpoint")), key=b"committed")

    committed = make_consumer(kafka_config, unique("g"))
    uncommitted = make_consumer(kafka_config, unique("g"), {"isolation.level": "read_uncommitted"})
    try:
        committed.subscribe([topic])
        uncommitted.subscribe([topic])
        seen_uncommitted = [k for k, _ in drain(uncommitted, 2)]
        seen_committed = [k for k, _ in drain(committed, 1)]
        assert drain(committed, 1, deadline_s=2) == []
    finally:
        committed.close()
        uncommitted.close()
    assert seen_uncommitted == [b"aborted", b"committed"]  # the abort really wrote the record
    assert seen_committed == [b"committed"]


def test_topics_create_is_idempotent_and_compaction_is_configured(
    pipeline_config: Config, admin: AdminClient
) -> None:
    first = create_topics(pipeline_config)
    second = create_topics(pipeline_config)
    assert all(r.created for r in first)
    assert not any(r.created or r.updated_configs for r in second)
    metadata = admin.list_topics(timeout=10)
    for s in CATALOGUE:
        name = pipeline_config.topic(s.name)
        assert len(metadata.topics[name].partitions) == s.partitions(
            pipeline_config.kafka.partitions
        )
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        described = admin.describe_configs([resource])[resource].result()
        for key, value in s.configs.items():
            assert described[key].value == value, f"{name} {key}"


def test_topics_create_restores_a_drifted_config(
    pipeline_config: Config, admin: AdminClient
) -> None:
    create_topics(pipeline_config)
    name = pipeline_config.topic("files.state")
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    entry = ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result()
    plain = ConfigResource(ConfigResource.Type.TOPIC, name)

    def policy() -> str | None:
        """The topic's cleanup.policy as described now; None while the broker that answers does
        not know the new topic yet (seen on a loaded machine)."""
        try:
            return str(admin.describe_configs([plain])[plain].result()["cleanup.policy"].value)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            return None

    wait_for(lambda: policy() == "delete", timeout_s=30, what="the drift to become visible")
    results = {r.topic: r for r in create_topics(pipeline_config)}
    assert results[name].updated_configs == ("cleanup.policy",)


def test_co_keyed_topics_put_one_file_on_one_partition_number(
    pipeline_config: Config, unique: Callable[[str], str]
) -> None:
    create_topics(pipeline_config)
    producer = TxProducer(pipeline_config.kafka, unique("tx"))
    keyed = [pipeline_config.topic(s.name) for s in CATALOGUE if s.file_keyed]
    with producer.transaction():
        for topic in keyed:
            producer.produce(topic, b"x", key=KEY)
    consumer = make_consumer(pipeline_config.kafka, unique("g"))
    consumer.subscribe(keyed)
    partitions = set()
    deadline = time.monotonic() + 30
    try:
        while len(partitions) < 1 or time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                partitions.add((msg.topic(), msg.partition()))
            if len(partitions) == len(keyed):
                break
    finally:
        consumer.close()
    assert {t for t, _ in partitions} == set(keyed)
    assert len({p for _, p in partitions}) == 1


def test_events_tail_reports_a_corrupt_event_and_goes_on(
    pipeline_config: Config, bootstrap: str, unique: Callable[[str], str]
) -> None:
    create_topics(pipeline_config)
    topic = pipeline_config.topic("deadletter")
    plain = Producer({"bootstrap.servers": bootstrap, "partitioner": PARTITIONER})
    truncated = Codec().encode("DeadLetter", sample("DeadLetter"))[:14]
    plain.produce(topic, truncated, key=b"bad")
    plain.produce(topic, Codec().encode("DeadLetter", sample("DeadLetter")), key=b"good")
    plain.flush(10)
    env = {
        "TERRA_XFER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TERRA_XFER_KAFKA_TOPIC_PREFIX": pipeline_config.kafka.topic_prefix,
    }
    result = CliRunner().invoke(
        cli,
        ["events", "tail", "deadletter", "--from-beginning", "--json", "--max-messages", "2"],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.output.splitlines()]
    assert [d["key"] for d in docs] == ["bad", "good"]
    assert docs[0]["type"] == "undecodable" and "corrupt" in docs[0]["error"]
    assert docs[1]["type"] == "DeadLetter"
    assert docs[1]["value"]["raw"] == "Foo Apr  5 \\xff\n"


def test_events_tail_on_a_missing_topic_is_a_usage_error(bootstrap: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["events", "tail", "no.such.topic", "--idle-exit", "1"],
        env={"TERRA_XFER_KAFKA_BOOTSTRAP_SERVERS": bootstrap},
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output
