"""Producers' input positions in the compacted checkpoint topic.

A producer commits its position in the same Kafka transaction as the events made from the input up
to it, so the latest committed checkpoint of a source is exactly where its committed events end.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import make_consumer
from terra_xfer.stage import Output, now_ms
from terra_xfer.topics import CHECKPOINTS


def last_checkpoint(config: Config, source: str, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """The Checkpoint last committed for ``source`` (``position`` decoded from JSON), or None.

    Call it after the producer's ``init_transactions``, which aborts whatever its previous
    incarnation left open, so the read ends at everything that incarnation committed.
    """
    topic = config.topic(CHECKPOINTS)
    consumer = make_consumer(
        config.kafka,
        f"terra-xfer-checkpoint-{uuid.uuid4().hex[:8]}",
        {"enable.partition.eof": True},
    )
    codec = Codec()
    found: dict[str, Any] | None = None
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        remaining = set(partitions)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TransientError(f"reading checkpoints from {topic} timed out")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                    continue
                raise TransientError(f"reading checkpoints from {topic}: {err.str()}")
            key = msg.key()
            if key is not None and key.decode() == source and msg.value():
                _name, value = codec.decode(msg.value() or b"")
                found = value | {"position": json.loads(value["position"])}
    finally:
        consumer.close()
    return found


def checkpoint_output(
    config: Config, codec: Codec, source: str, position: dict[str, Any], events: int
) -> Output:
    """The Checkpoint event that records ``position`` for ``source``."""
    value = {
        "source": source,
        "position": json.dumps(position, sort_keys=True),
        "events": events,
        "emitted_ms": now_ms(),
    }
    return Output(config.topic(CHECKPOINTS), source, codec.encode("Checkpoint", value))
