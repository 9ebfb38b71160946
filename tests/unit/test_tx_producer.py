"""What a transaction's caller is told: only committed deliveries, and a commit's true outcome.

No broker: the confluent-kafka producer inside :class:`TxProducer` is replaced by one that holds
delivery reports until they are served, as librdkafka does (on ``poll`` or ``flush``), and whose
``commit_transaction`` fails as told.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from terra_xfer.config import KafkaConfig
from terra_xfer.errors import TransientError
from terra_xfer.kafka import CommitOutcomeUnknown, TxProducer


class Written:
    """A delivered message: its offset."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


class Producer:
    """Delivery reports wait until served; ``commit_failures`` are raised by the next commits."""

    def __init__(self) -> None:
        self.queued: list[Callable[[], None]] = []
        self.calls: list[str] = []
        self.commit_failures: list[KafkaException] = []
        self.offset = 0

    def init_transactions(self, _timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, _topic: str, **kw: Any) -> None:
        written, report = Written(self.offset), kw["on_delivery"]
        self.offset += 1
        self.queued.append(lambda: report(None, written))

    def poll(self, _timeout: float = 0) -> int:
        served, self.queued = self.queued, []
        for report in served:
            report()
        return len(served)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0

    def commit_transaction(self, _timeout: float) -> None:
        self.calls.append("commit")
        if self.commit_failures:
            raise self.commit_failures.pop(0)

    def abort_transaction(self, _timeout: float) -> None:
        self.calls.append("abort")


def timed_out() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "Local: Timed out", retriable=True))


@pytest.fixture
def tx() -> TxProducer:
    producer = TxProducer(KafkaConfig(bootstrap_servers="127.0.0.1:9"), "tx-test")
    producer._producer = Producer()  # type: ignore[assignment]
    return producer


def inner(tx: TxProducer) -> Producer:
    return tx._producer  # type: ignore[return-value]


def test_a_delivery_of_an_aborted_transaction_is_not_told_during_the_next_one(
    tx: TxProducer,
) -> None:
    told: list[tuple[str, int | None]] = []
    with pytest.raises(RuntimeError), tx.transaction():
        tx.produce("t", b"aborted", on_delivery=lambda m: told.append(("aborted", m.offset())))
        raise RuntimeError("the step failed before its flush")  # the report is still queued
    with tx.transaction():
        tx.produce("t", b"next", on_delivery=lambda m: told.append(("next", m.offset())))

    assert inner(tx).calls == ["init", "begin", "abort", "begin", "commit"]
    assert told == [("next", 1)]


def test_a_commit_that_timed_out_is_asked_again_not_aborted(tx: TxProducer) -> None:
    inner(tx).commit_failures = [timed_out(), timed_out()]
    told: list[int | None] = []
    with tx.transaction():
        tx.produce("t", b"v", on_delivery=lambda m: told.append(m.offset()))

    assert inner(tx).calls == ["init", "begin", "commit", "commit", "commit"]
    assert told == [0]


def test_a_commit_whose_outcome_stays_unknown_is_not_aborted(
    tx: TxProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = itertools.count(0, 40)  # seconds: every call 40 s later
    monkeypatch.setattr("terra_xfer.kafka.time.monotonic", lambda: float(next(clock)))
    inner(tx).commit_failures = [timed_out() for _ in range(10)]
    unknown = pytest.raises(CommitOutcomeUnknown, match="whether it committed is unknown")
    with unknown, tx.transaction():
        tx.produce("t", b"v")

    assert "abort" not in inner(tx).calls  # refused in that state; a new producer settles it
    assert inner(tx).calls.count("commit") == 2  # asked again until COMMIT_RETRY_S had passed


def test_a_commit_that_must_be_aborted_is_aborted_and_retried_by_the_host(
    tx: TxProducer,
) -> None:
    abortable = KafkaError(KafkaError.INVALID_TXN_STATE, "abort it", txn_requires_abort=True)
    inner(tx).commit_failures = [KafkaException(abortable)]
    with pytest.raises(TransientError, match="transaction aborted"), tx.transaction():
        tx.produce("t", b"v")

    assert inner(tx).calls == ["init", "begin", "commit", "abort"]
