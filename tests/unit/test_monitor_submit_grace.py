"""The monitor submits a PREPARED batch itself only when the batcher's SUBMITTED record has not come
within ``submit_grace_s`` and the partition is read to its end; otherwise it follows the batcher's
task, so a healthy batch is submitted once. Driven by a fake clock over a fake topic."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import TopicPartition

from consumers.monitor import Monitor
from consumers.transfer.base import FileOutcome, TaskState, TaskStatus, TransferItem
from schemas.codec import Codec
from terra_xfer.stages import registry
from tests.fakes import Clock, offline
from tests.samples import sample

GRACE = 30.0
PARTITION = 1


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._where = (topic, partition, offset)
        self._value = value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"


class Topic:
    """One partition of batches.submitted: ``records`` are in the topic (the broker's end offset);
    a consumer reads them only as far as the test has ``delivered``."""

    def __init__(self, name: str, first_offset: int = 0) -> None:
        self.name = name
        self.first_offset = first_offset
        self.records: list[Msg] = []
        self.delivered = 0  # how many of ``records`` the consumer may read
        self.read = 0  # how many it has read

    def append(self, record: dict[str, Any]) -> None:
        offset = self.first_offset + len(self.records)
        value = Codec().encode("BatchSubmitted", record)
        self.records.append(Msg(self.name, PARTITION, offset, value))

    def deliver_all(self) -> None:
        self.delivered = len(self.records)


class Consumer:
    """librdkafka's consumer calls the monitor makes, over one :class:`Topic`."""

    def __init__(self, topic: Topic) -> None:
        self.t = topic

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        end = min(self.t.delivered, self.t.read + num_messages)
        taken = self.t.records[self.t.read : end]
        self.t.read = end
        return taken

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(self.t.name, PARTITION, self.t.first_offset + self.t.read)]

    def get_watermark_offsets(self, tp: TopicPartition, **_kwargs: Any) -> tuple[int, int]:
        return 0, self.t.first_offset + len(self.t.records)

    def subscribe(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


class Producer:
    """Records the offsets every transaction commits."""

    def __init__(self) -> None:
        self.offsets: list[list[TopicPartition]] = []

    def init(self) -> None:
        return None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def produce(self, *_args: Any) -> None:
        return None

    def send_offsets(self, _consumer: object, offsets: Sequence[TopicPartition]) -> None:
        self.offsets.append(list(offsets))

    def close(self) -> None:
        return None


class Backend:
    """A remote service: every submit is counted; every task stays ACTIVE."""

    name = "double"
    raw_names = True
    status_poll_s = None

    def __init__(self) -> None:
        self.submits: list[str] = []
        self.polled: list[str] = []

    def submit(
        self, batch_id: str, submission_id: str, items: Sequence[TransferItem], label: str
    ) -> str:
        self.submits.append(submission_id)
        return f"task-of-{submission_id}"

    def task(self, task_id: str) -> TaskState:
        self.polled.append(task_id)
        return TaskState(task_id, TaskStatus.ACTIVE, "OK", 1, 0, 0, 0, None, False)

    def outcomes(self, task_id: str, items: Sequence[TransferItem]) -> list[FileOutcome]:
        raise AssertionError("no task finishes here")


PREPARED = sample("BatchSubmitted") | {"phase": "PREPARED", "task_id": None}
SUBMITTED = PREPARED | {"phase": "SUBMITTED", "task_id": "task-from-batcher"}


class Rig:
    def __init__(self, first_offset: int = 0) -> None:
        config = offline()
        config = dataclasses.replace(
            config, monitor=dataclasses.replace(config.monitor, submit_grace_s=GRACE)
        )
        self.clock = Clock()
        self.backend = Backend()
        self.monitor = Monitor(config, registry.spec("monitor"), self.backend, self.clock)  # type: ignore[arg-type]
        assert self.monitor.kafka.consumer is not None
        self.monitor.kafka.consumer.close()
        self.monitor.kafka.producer.close()
        self.topic = Topic(config.topic("batches.submitted"), first_offset)
        self.producer = Producer()
        self.monitor.kafka.consumer = Consumer(self.topic)  # type: ignore[assignment]
        self.monitor.kafka.producer = self.producer  # type: ignore[assignment]

    def step_after(self, seconds: float) -> None:
        self.clock.now += seconds
        self.monitor.step()


def test_a_submitted_record_within_the_grace_means_no_submit_by_the_monitor() -> None:
    rig = Rig()
    rig.topic.append(PREPARED)
    rig.topic.deliver_all()
    rig.step_after(0)
    rig.topic.append(SUBMITTED)  # the batcher's submit took a while
    rig.topic.deliver_all()
    rig.step_after(GRACE - 1)
    for _ in range(3):
        rig.step_after(GRACE)
    assert rig.backend.submits == []
    assert set(rig.backend.polled) == {"task-from-batcher"}


def test_no_submitted_record_within_the_grace_means_one_submit_by_the_monitor() -> None:
    rig = Rig()
    rig.topic.append(PREPARED)
    rig.topic.deliver_all()
    rig.step_after(0)
    rig.step_after(GRACE - 1)
    assert rig.backend.submits == [] and rig.backend.polled == []
    rig.step_after(1)
    for _ in range(3):
        rig.step_after(GRACE)
    assert rig.backend.submits == [PREPARED["submission_id"]]
    assert set(rig.backend.polled) == {f"task-of-{PREPARED['submission_id']}"}


def test_a_submitted_record_after_the_monitor_submitted_changes_nothing() -> None:
    rig = Rig()
    rig.topic.append(PREPARED)
    rig.topic.deliver_all()
    rig.step_after(0)
    rig.step_after(GRACE)
    rig.topic.append(SUBMITTED | {"task_id": f"task-of-{PREPARED['submission_id']}"})
    rig.topic.deliver_all()
    rig.step_after(GRACE)
    assert rig.backend.submits == [PREPARED["submission_id"]]


def test_a_replay_of_both_records_submits_nothing_however_slow_it_is() -> None:
    rig = Rig()
    rig.topic.append(PREPARED)
    rig.topic.append(SUBMITTED)  # both in the topic before the (restarted) monitor reads
    rig.topic.delivered = 1
    rig.step_after(0)
    rig.step_after(GRACE * 3)  # the PREPARED record's grace passed with the SUBMITTED one unread
    assert rig.backend.submits == []
    rig.topic.deliver_all()
    rig.step_after(GRACE)
    assert rig.backend.submits == []
    assert set(rig.backend.polled) == {"task-from-batcher"}


def test_a_batch_waiting_for_its_grace_holds_back_the_committed_offset() -> None:
    rig = Rig(first_offset=7)
    rig.topic.append(PREPARED)
    rig.topic.deliver_all()
    rig.step_after(0)
    rig.step_after(GRACE - 1)
    assert rig.producer.offsets
    assert all(
        [(tp.partition, tp.offset) for tp in offsets] == [(PARTITION, 7)]
        for offsets in rig.producer.offsets
    )
