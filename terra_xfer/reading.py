"""Reading a topic from its beginning to its end *now* (committed events only), and where a
committed reader is held back.

Used wherever a stage or a command needs a topic's whole content once: a producer's last
checkpoint, the dead letters for a report, a test's view of what was written. A transaction still
open on a partition holds every read_committed reader at its start (:func:`open_transactions`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, IsolationLevel, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from terra_xfer.config import KafkaConfig
from terra_xfer.errors import TransientError
from terra_xfer.kafka import make_consumer


def read_to_end(kafka: KafkaConfig, topic: str, timeout_s: float = 60.0) -> Iterator[Message]:
    """Every committed message of ``topic`` (tombstones included) up to each partition's end.

    A missing topic yields nothing. Joins no group and commits nothing.
    """
    consumer = make_consumer(
        kafka, f"terra-xfer-reader-{uuid.uuid4().hex[:8]}", {"enable.partition.eof": True}
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return
        parts = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        remaining = set(parts)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TransientError(f"reading {topic} to its end timed out")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is None:
                yield msg
            elif err.code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
            else:
                raise TransientError(f"reading {topic}: {err.str()}")
    finally:
        consumer.close()


def open_transactions(
    admin: AdminClient, partitions: Iterable[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, tuple[int, int]]:
    """The partitions among ``partitions`` on which a transaction is open, with their last stable
    offset and their end (the first below the second). Raises ``KafkaException`` as the listing
    does."""
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    wanted = {TopicPartition(tp.topic, tp.partition): latest for tp in partitions}
    if not wanted:
        return {}
    stable, end = (
        {
            tp: future.result().offset
            for tp, future in admin.list_offsets(
                wanted, isolation_level=level, request_timeout=timeout_s
            ).items()
        }
        for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED)
    )
    return {tp: (stable[tp], end[tp]) for tp in wanted if stable[tp] < end[tp]}
