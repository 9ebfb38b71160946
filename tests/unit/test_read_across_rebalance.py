"""A read during which the group rebalanced hands nothing on and goes back to committed offsets.

Messages fetched before a rebalance may be of partitions now given to another member; committed
after it, with the new generation, the broker would accept them. So a stage never handles them:
the read returns nothing and the consumer is put back at the committed offsets of what it holds.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from terra_xfer.config import Config
from terra_xfer.errors import PermanentError
from terra_xfer.stages import registry
from terra_xfer.stages.commit import JOIN_DEADLINE_S, NotJoined, StageKafka

TOPIC = "terra.files.transferred"


class Msg:
    def __init__(self, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self._p, self._o, self._error = partition, offset, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class Consumer:
    """A member whose reads are scripted: each read may run rebalance callbacks first."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Any] = {}
        self.script: list[tuple[list[tuple[str, list[int]]], list[Msg]]] = []
        self.held = [0, 1]
        self.seeks: list[tuple[int, int]] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def consume(self, n: int, timeout: float) -> list[Msg]:
        if not self.script:
            return []
        rebalances, messages = self.script.pop(0)
        for what, partitions in rebalances:
            tps = [TopicPartition(TOPIC, p) for p in partitions]
            self.callbacks[what](self, tps)
            self.held = partitions if what == "on_assign" else []
        return messages

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in self.held]

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 100 + tp.partition) for tp in tps]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def close(self) -> None:
        pass


class Producer:
    transactional_id = "deleter-test"

    def init(self) -> None:
        pass

    def close(self) -> None:
        pass


def stage_kafka() -> tuple[StageKafka, Consumer]:
    kafka = StageKafka(Config(), registry.spec("deleter"))
    assert kafka.consumer is not None
    kafka.consumer.close()
    kafka.producer.close()
    fake = Consumer()
    kafka.consumer, kafka.producer = fake, Producer()  # type: ignore[assignment]
    kafka.start()
    return kafka, fake


def test_messages_read_across_a_rebalance_are_not_handed_on() -> None:
    kafka, consumer = stage_kafka()
    before = [Msg(1, 130), Msg(0, 170)]  # fetched while partition 1 was still held
    consumer.script = [([("on_revoke", [0, 1]), ("on_assign", [0])], before)]
    assert kafka.read(500, 0.1) == []
    assert consumer.seeks == [(0, 100)]  # back to the committed offset of what is held now


def test_a_read_without_a_rebalance_hands_its_messages_on() -> None:
    kafka, consumer = stage_kafka()
    messages = [Msg(0, 100), Msg(1, 101)]
    consumer.script = [([], messages)]
    assert kafka.read(500, 0.1) == messages
    consumer.script = [([("on_revoke", [0, 1]), ("on_assign", [0, 1])], [])]
    assert kafka.read(500, 0.1) == []  # nothing was read: nothing to go back for
    assert consumer.seeks == []


def test_an_error_in_a_read_across_a_rebalance_is_still_raised() -> None:
    kafka, consumer = stage_kafka()
    fenced = KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced by a newer instance", fatal=True)
    consumer.script = [([("on_revoke", [0, 1])], [Msg(1, 130), Msg(0, -1, fenced)])]
    with pytest.raises(PermanentError, match="fenced"):
        kafka.read(500, 0.1)  # a fatal consumer ends the stage; it is not read again


def test_a_consumer_never_given_partitions_ends_its_process_after_the_deadline() -> None:
    kafka, _consumer = stage_kafka()
    now = [0.0]
    kafka.clock = lambda: now[0]
    kafka._unassigned_since = 0.0
    now[0] = JOIN_DEADLINE_S - 1
    assert kafka.read(500, 0.1) == []  # a join may take a while
    now[0] = JOIN_DEADLINE_S
    with pytest.raises(NotJoined, match=r"not given any partition of group \S+deleter for 120 s"):
        kafka.read(500, 0.1)


def test_a_member_given_partitions_even_none_is_joined_until_it_loses_them() -> None:
    kafka, consumer = stage_kafka()
    now = [0.0]
    kafka.clock = lambda: now[0]
    kafka._unassigned_since = 0.0
    consumer.script = [([("on_assign", [])], [])]  # more replicas than partitions: given none
    kafka.read(500, 0.1)
    now[0] = 10 * JOIN_DEADLINE_S
    consumer.script = [([("on_revoke", [])], [])]  # a rebalance under way is not a lost member
    assert kafka.read(500, 0.1) == []
    consumer.script = [([("on_lost", [])], [])]
    kafka.read(500, 0.1)  # its session expired: the deadline runs again from here
    now[0] += JOIN_DEADLINE_S
    with pytest.raises(NotJoined):
        kafka.read(500, 0.1)
