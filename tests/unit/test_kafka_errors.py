"""How client errors are typed: what a stage retries, what stops it, and the rewind's retries."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from terra_xfer import kafka
from terra_xfer.errors import PermanentError, TransientError
from terra_xfer.kafka import RewindError, _wrap, rewind_to_committed


def failure(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "broker said no", **flags))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (failure(KafkaError._TIMED_OUT, retriable=True), TransientError),
        (failure(KafkaError.INVALID_TXN_STATE, txn_requires_abort=True), TransientError),
        (failure(KafkaError._FENCED, fatal=True), PermanentError),
        (failure(KafkaError.TOPIC_AUTHORIZATION_FAILED), PermanentError),
    ],
)
def test_abortable_and_retriable_errors_are_transient_fatal_ones_permanent(
    error: KafkaException, kind: type[Exception]
) -> None:
    assert isinstance(_wrap(error, "commit_transaction"), kind)


class Consumer:
    """Committed offsets that fail ``failures`` times first."""

    def __init__(self, failures: list[KafkaException]) -> None:
        self.failures = failures
        self.seeks: list[TopicPartition] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("t", 0)]

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.failures:
            raise self.failures.pop(0)
        return [TopicPartition("t", 0, 42)]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka.time, "sleep", lambda _s: None)


def test_the_rewind_waits_for_the_coordinator_to_come_back() -> None:
    consumer = Consumer([failure(KafkaError.NOT_COORDINATOR), failure(KafkaError._TIMED_OUT)])
    rewind_to_committed(consumer)  # type: ignore[arg-type]
    assert [(tp.partition, tp.offset) for tp in consumer.seeks] == [(0, 42)]


def test_a_rewind_that_cannot_happen_stops_the_stage_rather_than_skip_messages() -> None:
    consumer: Any = Consumer([failure(KafkaError.GROUP_AUTHORIZATION_FAILED)])
    with pytest.raises(RewindError) as caught:
        rewind_to_committed(consumer)
    assert not isinstance(caught.value, TransientError) and consumer.seeks == []
    endless: Any = Consumer([failure(KafkaError.NOT_COORDINATOR)] * 1000)
    with pytest.raises(RewindError):
        rewind_to_committed(endless, give_up_after_s=0.0)
