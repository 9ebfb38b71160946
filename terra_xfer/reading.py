"""Reading a topic from its beginning to its end *now* (committed events only).

Used wherever a stage or a command needs a topic's whole content once: a producer's last
checkpoint, the dead letters for a report, a test's view of what was written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

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
