"""Consumer lag per group, topic and partition: committed offset, end offset, lag in messages and
in seconds, and the members of each group; published as the consumer-lag gauges.

``end`` is the last stable offset, the end of the partition as a ``read_committed`` consumer sees
it. Transaction markers occupy offsets but are never delivered, so a partition consumed to its end
can still show ``end - committed == 1``. The time lag settles it: the message at the committed
offset is read, and when a ``read_committed`` consumer finds none before the end, the lag is 0 in
messages and in seconds; otherwise the time lag is the age of that message (the oldest one not
consumed), by its timestamp.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import client_config, make_consumer
from terra_xfer.stages.spec import StageSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int
    lag_seconds: float = 0.0
    low: int = 0


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
                    low=low,
                )
            )
        return rows
    finally:
        consumer.close()


def total_lag(config: Config, stages: Sequence[StageSpec]) -> dict[str, int]:
    """Messages not yet consumed, per stage's group (``stages``: the registry's consumers)."""
    return {
        s.name: sum(r.lag for r in group_lag(config, s.consumer_group(config), s.inputs))
        for s in stages
    }


def with_time_lag(
    config: Config, rows: list[PartitionLag], now_ms: int | None = None, timeout_s: float = 10.0
) -> list[PartitionLag]:
    """``rows`` with the age of the oldest unconsumed message; lag 0 where only markers remain."""
    behind = {(r.topic, r.partition): r for r in rows if r.lag > 0}
    if not behind:
        return rows
    oldest = _first_timestamps(config, behind.values(), timeout_s)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out = []
    for r in rows:
        if (r.topic, r.partition) not in behind:
            out.append(r)
        elif (ts := oldest.get((r.topic, r.partition))) is None:
            out.append(dataclasses.replace(r, lag=0, lag_seconds=0.0))
        else:
            out.append(dataclasses.replace(r, lag_seconds=max(0, now - ts) / 1000))
    return out


def _first_timestamps(
    config: Config, rows: Iterable[PartitionLag], timeout_s: float
) -> dict[tuple[str, int], int | None]:
    """Per partition, the timestamp (ms) of the first committed message at or after the group's
    offset, or None when a read_committed consumer reaches the end without one."""
    parts = [
        TopicPartition(r.topic, r.partition, r.low if r.committed is None else r.committed)
        for r in rows
    ]
    probe = make_consumer(config.kafka, config.group("lag-probe"), {"enable.partition.eof": True})
    found: dict[tuple[str, int], int | None] = {}
    try:
        probe.assign(parts)
        deadline = time.monotonic() + timeout_s
        while len(found) < len(parts) and time.monotonic() < deadline:
            msg = probe.poll(0.2)
            if msg is None:
                continue
            where = (str(msg.topic()), int(msg.partition() or 0))
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise TransientError(f"reading {where[0]}[{where[1]}] for its lag: {err.str()}")
            if where not in found:
                found[where] = None if err is not None else msg.timestamp()[1]
    finally:
        probe.close()
    return found


def group_members(config: Config, groups: list[str], timeout_s: float = 10.0) -> dict[str, int]:
    """How many members each consumer group has now (0 for an empty or unknown group)."""
    admin = AdminClient(client_config(config.kafka))
    try:
        futures = admin.describe_consumer_groups(groups, request_timeout=timeout_s)
        return {g: len(f.result(timeout=timeout_s).members) for g, f in futures.items()}
    except KafkaException as exc:
        raise TransientError(f"describing consumer groups: {exc}") from exc


def pipeline_lag(
    config: Config, stages: Sequence[StageSpec], timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Lag in messages and seconds of every stage's group on every topic it consumes."""
    rows: list[PartitionLag] = []
    for stage in stages:
        rows += group_lag(config, stage.consumer_group(config), stage.inputs, timeout_s)
    return with_time_lag(config, rows, timeout_s=timeout_s)


def publish_lag(
    config: Config, stages: Sequence[StageSpec], timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Measure every stage's lag and group size and set the consumer-lag gauges; return the rows."""
    rows = pipeline_lag(config, stages, timeout_s)
    for r in rows:
        labels = (r.group, r.topic, str(r.partition))
        metrics.CONSUMER_LAG.labels(*labels).set(r.lag)
        metrics.CONSUMER_LAG_SECONDS.labels(*labels).set(r.lag_seconds)
        metrics.COMMITTED_OFFSET.labels(*labels).set(-1 if r.committed is None else r.committed)
    members = group_members(config, [s.consumer_group(config) for s in stages], timeout_s)
    for group, n in members.items():
        metrics.GROUP_MEMBERS.labels(group).set(n)
    return rows
