"""Consumer lag per group on the real broker: groups that read one topic from different places, with
offsets committed in transactions (so they sit on commit markers), each get their own lag, the same
through the library, `terra-xfer lag`, the gauges and up's progress line; compared with Kafka's own
`kafka-consumer-groups --describe`."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Message, Producer, TopicPartition

from terra_xfer import metrics
from terra_xfer.cli import State
from terra_xfer.cli.lag import lag
from terra_xfer.cli.up import Progress
from terra_xfer.config import BrokerConfig, Config, KafkaConfig
from terra_xfer.kafka import TxProducer, make_consumer, next_offsets
from terra_xfer.kafka_tools import run_tool
from terra_xfer.lag import PartitionLag, measure, publish_lag
from terra_xfer.stages import registry
from terra_xfer.topics import FILES_TRANSFERRED, create_topics
from tests.kafka_read import wait_for

pytestmark = pytest.mark.broker
HALF_HOUR_MS = 30 * 60 * 1000
# The partition's offsets: the first transaction's 100 records (0-99) and its commit marker (100),
# the second's 500 records (101-600) and its marker (601); the end is 602.
FIRST, SECOND = 100, 500
FIRST_MARKER = FIRST
END = FIRST + 1 + SECOND + 1
BEHIND_LAG = END - (FIRST_MARKER + 1)  # the second transaction's 500 records and its marker


def write_transaction(
    bootstrap: str, topic: str, count: int, txid: str, timestamp_ms: int = 0
) -> None:
    """``count`` records on partition 0 of ``topic`` in one committed transaction (stamped
    ``timestamp_ms``, or now when 0)."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txid})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(count):
        producer.produce(topic, f"record {i}".encode(), b"k", partition=0, timestamp=timestamp_ms)
    producer.commit_transaction(30)


def consume_and_commit(kafka: KafkaConfig, group: str, topic: str, through: int, txid: str) -> None:
    """Read partition 0 of ``topic`` as a stage of ``group`` does (read_committed, from the
    group's committed offset) up to the record at offset ``through``, and commit the offset after
    it in a transaction, as every stage commits: it lands on the transaction's commit marker."""
    consumer = make_consumer(kafka, group)
    producer = TxProducer(kafka, txid)
    try:
        consumer.assign([TopicPartition(topic, 0)])  # at the committed offset, or the earliest
        read: list[Message] = []
        deadline = time.monotonic() + 60
        while not read or read[-1].offset() != through:
            assert time.monotonic() < deadline, f"{group} did not read {topic}@{through} in time"
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                read.append(msg)
        producer.init()
        with producer.transaction():
            producer.send_offsets(consumer, next_offsets(read))
    finally:
        consumer.close()
        producer.close()
    wait_for(
        lambda: committed(kafka, group, topic) == through + 1,
        timeout_s=30,
        what=f"{group}'s transactional commit to show",
    )


def committed(kafka: KafkaConfig, group: str, topic: str) -> int:
    consumer = make_consumer(kafka, group)
    try:
        offset: int = consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        return offset
    finally:
        consumer.close()


def two_groups_apart(
    kafka: KafkaConfig,
    topic: str,
    caught_up: list[str],
    behind: str,
    unique: Callable[[str], str],
) -> None:
    """Every group reads and commits the first transaction; then a second one of 500 records,
    half an hour old, is read and committed by the ``caught_up`` groups only."""
    write_transaction(kafka.bootstrap_servers, topic, FIRST, unique("tx-first"))
    for group in [*caught_up, behind]:
        consume_and_commit(kafka, group, topic, FIRST - 1, unique("tx-commit"))
    old = int(time.time() * 1000) - HALF_HOUR_MS
    write_transaction(kafka.bootstrap_servers, topic, SECOND, unique("tx-second"), old)
    for group in caught_up:
        consume_and_commit(kafka, group, topic, END - 2, unique("tx-commit"))


def only(rows: list[PartitionLag], group: str, topic: str, partition: int = 0) -> PartitionLag:
    [row] = [r for r in rows if (r.group, r.topic, r.partition) == (group, topic, partition)]
    return row


def kafka_describe(bootstrap: str, groups: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per group, what `kafka-consumer-groups --describe` reports for partition 0: its current
    offset, log end offset and lag."""
    args = ["--bootstrap-server", bootstrap, "--describe"]
    for group in groups:
        args += ["--group", group]
    done = run_tool(BrokerConfig().kafka_version, "consumer-groups", args, timeout_s=120)
    assert done.returncode == 0, done.stderr
    found = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] in groups and fields[2] == "0":
            found[fields[0]] = (int(fields[3]), int(fields[4]), int(fields[5]))
    return found


def test_two_groups_on_one_topic_each_get_their_own_lag(
    kafka_config: KafkaConfig,
    pipeline_config: Config,
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
) -> None:
    topic = make_topic(partitions=1)
    config = dataclasses.replace(
        pipeline_config, kafka=dataclasses.replace(pipeline_config.kafka, topic_prefix="")
    )
    caught, behind = unique("caught"), unique("behind")
    two_groups_apart(kafka_config, topic, [caught], behind, unique)
    now_ms = int(time.time() * 1000)

    # Whichever group is measured first, neither takes the other's answer.
    for order in ([caught, behind], [behind, caught]):
        rows = measure(config, [(g, [topic]) for g in order], now_ms=now_ms)
        ahead = only(rows, caught, topic)
        assert (ahead.committed, ahead.end) == (END - 1, END)  # on the last commit marker
        assert (ahead.lag, ahead.lag_seconds, ahead.oldest_unconsumed) == (0, 0.0, None)
        late = only(rows, behind, topic)
        assert (late.committed, late.end) == (FIRST_MARKER, END)  # on the first commit marker
        assert late.oldest_unconsumed == FIRST_MARKER + 1
        assert late.lag == BEHIND_LAG
        # The oldest record it has not read was stamped half an hour before the measurement.
        assert late.lag_seconds >= HALF_HOUR_MS / 1000

    # Kafka's tool counts from the committed offset to the high watermark: it counts the marker
    # a caught-up group sits on, and the one the late group sits on (README, "Lag").
    described = kafka_describe(kafka_config.bootstrap_servers, [caught, behind])
    assert described[caught] == (END - 1, END, 1)
    assert described[behind] == (FIRST_MARKER, END, BEHIND_LAG + 1)


def lag_json(config: Config) -> dict[str, Any]:
    state = State(None, "INFO", None)
    state._config = config
    result = CliRunner().invoke(lag, ["--json"], obj=state)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def test_lag_cli_gauges_and_progress_give_each_stage_its_own_lag(
    pipeline_config: Config, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    """files.transferred is read by ingest, the deleter and the state keeper: ingest 500 behind,
    the other two caught up with their offsets on the commit marker."""
    config = dataclasses.replace(
        pipeline_config,
        status=dataclasses.replace(pipeline_config.status, index_path=tmp_path / "up.sqlite"),
    )
    create_topics(config)
    topic = config.topic(FILES_TRANSFERRED)
    ingest, deleter, keeper = map(config.group, ("ingest", "deleter", "state-keeper"))
    two_groups_apart(config.kafka, topic, [deleter, keeper], ingest, unique)

    doc = lag_json(config)
    groups = doc["groups"]
    assert groups[ingest]["lag"] == BEHIND_LAG
    assert groups[ingest]["lag_seconds"] >= HALF_HOUR_MS / 1000
    for group, summary in groups.items():
        if group != ingest:
            assert (summary["lag"], summary["lag_seconds"]) == (0, 0.0), group
    rows = {(r["group"], r["topic"], r["partition"]): r for r in doc["rows"]}
    row = rows[(ingest, topic, 0)]
    assert (row["committed"], row["end"], row["lag"]) == (FIRST_MARKER, END, BEHIND_LAG)
    assert row["oldest_unconsumed"] == FIRST_MARKER + 1
    for group in (deleter, keeper):
        row = rows[(group, topic, 0)]
        assert (row["committed"], row["end"], row["lag"], row["lag_seconds"]) == (
            END - 1,
            END,
            0,
            0.0,
        )
    assert all(r["lag"] == 0 for key, r in rows.items() if key != (ingest, topic, 0))

    publish_lag(config, list(registry.consumers()))
    for group, expected in ((ingest, BEHIND_LAG), (deleter, 0), (keeper, 0)):
        labels = {"group": group, "topic": topic, "partition": "0"}
        messages = metrics.REGISTRY.get_sample_value("terra_xfer_consumer_lag_messages", labels)
        seconds = metrics.REGISTRY.get_sample_value("terra_xfer_consumer_lag_seconds", labels)
        assert messages == expected, group
        assert seconds is not None and (seconds > 0) == (group == ingest), group

    progress = Progress(config)
    try:
        line = progress.line({})
    finally:
        progress.close()
    # Only ingest is behind, by its 500 records and the marker, for half an hour or more.
    [shown] = [part for part in line.split(" | ") if part.startswith("lag ")]
    age = re.fullmatch(rf"lag ingest:{BEHIND_LAG}/(\d+)m", shown)
    assert age is not None and int(age.group(1)) >= 30, line
