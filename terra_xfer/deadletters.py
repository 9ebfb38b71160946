"""Reading the dead-letter topic back: counts by source and reason, for reports."""

from __future__ import annotations

import time
import uuid
from collections import Counter

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from schemas.codec import Codec, CodecError
from terra_xfer.config import Config
from terra_xfer.kafka import make_consumer
from terra_xfer.topics import DEADLETTER


def reason_class(reason: str) -> str:
    """A reason without its particulars (paths, quoted values), so like failures count together."""
    head = reason.split(":")[0]
    return " ".join(w for w in head.split() if not (w.startswith(("'", '"', "/")) or "/" in w))


def count_dead_letters(config: Config, timeout_s: float = 30.0) -> dict[str, int]:
    """Dead letters so far, as ``{"<source>: <reason class>": count}``."""
    topic = config.topic(DEADLETTER)
    consumer = make_consumer(
        config.kafka, f"terra-xfer-report-{uuid.uuid4().hex[:8]}", {"enable.partition.eof": True}
    )
    codec = Codec()
    counts: Counter[str] = Counter()
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return {}
        parts = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        remaining = set(parts)
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                continue
            try:
                _name, value = codec.decode(msg.value() or b"")
            except CodecError:
                counts["undecodable dead letter"] += 1
                continue
            counts[f"{value['source']}: {reason_class(value['reason'])}"] += 1
    finally:
        consumer.close()
    return dict(counts)
