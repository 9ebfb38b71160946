"""Consumer lag per group, topic and partition: committed offset, end offset, lag in messages."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, TopicPartition

from terra_xfer.config import Config
from terra_xfer.kafka import make_consumer

# Each stage's consumer group and the topics it consumes (catalogue names).
STAGES: dict[str, tuple[str, ...]] = {
    "batcher": ("files.arrived",),
    "monitor": ("batches.submitted",),
    "state-keeper": (
        "files.arrived",
        "batches.submitted",
        "files.transferred",
        "files.ingested",
        "files.deleted",
    ),
    "ingest": ("files.transferred",),
    "deleter": ("files.transferred",),
}


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


def group_lag(
    config: Config, group: str, topics: tuple[str, ...], timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Lag of ``group`` on ``topics``, read without joining the group."""
    consumer = make_consumer(config.kafka, group)
    try:
        names = [config.topic(t) for t in topics]
        meta = consumer.list_topics(timeout=timeout_s)
        parts = [
            TopicPartition(n, p)
            for n in names
            if n in meta.topics
            for p in sorted(meta.topics[n].partitions)
        ]
        committed = consumer.committed(parts, timeout=timeout_s) if parts else []
        rows = []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            at = None if tp.offset == OFFSET_INVALID else tp.offset
            rows.append(
                PartitionLag(
                    group,
                    tp.topic,
                    tp.partition,
                    at,
                    high,
                    max(0, high - (low if at is None else at)),
                )
            )
        return rows
    finally:
        consumer.close()


def total_lag(config: Config) -> dict[str, int]:
    """Messages not yet consumed, per stage's group."""
    return {s: sum(r.lag for r in group_lag(config, config.group(s), t)) for s, t in STAGES.items()}
