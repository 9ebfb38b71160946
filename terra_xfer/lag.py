"""Consumer lag per group, topic and partition: the one definition that ``terra-xfer lag``, the
progress line of ``up`` and the consumer-lag gauges all use.

Every consumed topic is read by more than one group (files.transferred by ingest, the deleter and
the state keeper), so everything here is measured for one (group, topic, partition) at a time, from
where that group stands; nothing found for one group is ever reused for another.

For one group on one partition, as a ``read_committed`` member of the group would see it:

- ``end``: the last stable offset (LSO), the end of the partition for a ``read_committed``
  consumer: the high watermark when no transaction is open, else the first offset of the oldest
  open transaction, whose records nobody can read yet.
- the group's position: its committed offset; the low watermark when it has committed nothing
  (every stage starts from the earliest record) or when its offset was deleted by retention.
- ``oldest_unconsumed``: the offset of the first record a ``read_committed`` consumer gets from
  that position, found by reading it. Transaction markers occupy offsets but are never delivered,
  and records of aborted transactions are skipped, so a group that has consumed everything can
  sit at ``end - 1`` (a stage commits the offset after the last record it read, which is the
  transaction's commit marker): nothing is read there before the end, and the group is caught up.
- ``lag`` (messages): ``end - oldest_unconsumed``, or 0 when there is no such record before the
  end. These are offsets, as Kafka counts lag: the commit marker of each transaction still to be
  read is one of them (one per transaction and partition), as are aborted records among them.
- ``lag_seconds``: the age of that oldest unconsumed record by its timestamp, 0 when ``lag`` is 0.

``kafka-consumer-groups --describe`` counts ``high watermark - committed`` instead: it reports a
lag of 1 for a group whose offset sits on a final commit marker, and counts the records of a
transaction still open, which ``read_committed`` consumers cannot read yet (README, "Lag").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import client_config, make_consumer
from terra_xfer.stages.spec import StageSpec

log = logging.getLogger(__name__)
# Where a read starts: (topic, partition, offset).
Start = tuple[str, int, int]


@dataclass(frozen=True)
class GroupOffsets:
    """What the broker says of one group on one partition: its committed offset (None: none) and
    the partition's low watermark and last stable offset."""

    group: str
    topic: str
    partition: int
    committed: int | None
    low: int
    end: int

    @property
    def position(self) -> int:
        """Where a member of the group would read next."""
        if self.committed is None or self.committed < self.low:
            return self.low
        return self.committed

    @property
    def start(self) -> Start:
        return (self.topic, self.partition, self.position)


@dataclass(frozen=True)
class Unconsumed:
    """The first record a ``read_committed`` consumer gets from some position: its offset and
    timestamp (ms)."""

    offset: int
    timestamp_ms: int


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
    oldest_unconsumed: int | None = None


@dataclass(frozen=True)
class GroupLag:
    """One group's lag on all it reads: messages summed, seconds the oldest of its partitions."""

    messages: int
    seconds: float


def partition_lag(offsets: GroupOffsets, first: Unconsumed | None, now_ms: int) -> PartitionLag:
    """The lag of ``offsets``'s group on its partition, given ``first``: the first record a
    ``read_committed`` consumer gets from the group's position (None: none before the end)."""
    o = offsets
    if first is None or first.offset >= o.end:
        return PartitionLag(o.group, o.topic, o.partition, o.committed, o.end, 0, 0.0, o.low)
    # A record without a timestamp (-1, from a client of before Kafka 0.10) has no known age.
    age_ms = max(0, now_ms - first.timestamp_ms) if first.timestamp_ms >= 0 else 0
    lag = o.end - first.offset
    return PartitionLag(
        o.group, o.topic, o.partition, o.committed, o.end, lag, age_ms / 1000, o.low, first.offset
    )


def lag_rows(
    offsets: Iterable[GroupOffsets], first: Mapping[Start, Unconsumed | None], now_ms: int
) -> list[PartitionLag]:
    """Each group's lag on each of its partitions, ``first`` keyed by where each group reads
    (:attr:`GroupOffsets.start`): groups at the same position share the answer, others never."""
    return [partition_lag(o, first.get(o.start), now_ms) for o in offsets]


def by_group(rows: Iterable[PartitionLag]) -> dict[str, GroupLag]:
    """Per group, in the order the rows name them: messages not consumed on any of its
    partitions, and the age of its oldest one."""
    out: dict[str, GroupLag] = {}
    for r in rows:
        had = out.get(r.group, GroupLag(0, 0.0))
        out[r.group] = GroupLag(had.messages + r.lag, max(had.seconds, r.lag_seconds))
    return out


def to_read(offsets: Iterable[GroupOffsets]) -> set[Start]:
    """The positions whose first record must be read: those of groups not at the end."""
    return {o.start for o in offsets if o.position < o.end}


def rounds(starts: Iterable[Start]) -> list[dict[tuple[str, int], int]]:
    """``starts`` as reads of one offset per partition: the first round at each partition's
    lowest position, the next at its second lowest, and so on (a consumer reads a partition from
    one place at a time)."""
    per_partition: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in sorted(set(starts)):
        per_partition.setdefault((topic, partition), []).append(offset)
    depth = max((len(v) for v in per_partition.values()), default=0)
    return [
        {tp: offs[i] for tp, offs in per_partition.items() if i < len(offs)} for i in range(depth)
    ]


def answered_by(
    start: Start, found: Mapping[Start, Unconsumed | None]
) -> tuple[bool, Unconsumed | None]:
    """What a read of the same partition from a lower position already says of ``start``:
    (True, None) when it found nothing before the end; (True, that record) when its first record
    lies at or after ``start`` (there is none between); (False, None) when ``start`` must be read
    itself."""
    topic, partition, offset = start
    for (t, p, o), first in found.items():
        if (t, p) != (topic, partition) or o > offset:
            continue
        if first is None or first.offset >= offset:
            return True, first
    return False, None


def group_offsets(
    config: Config, group: str, topics: Sequence[str], timeout_s: float = 10.0
) -> list[GroupOffsets]:
    """The committed offsets of ``group`` on every partition of ``topics`` (catalogue names),
    with each partition's low watermark and last stable offset; read without joining the group."""
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
            # Read after the committed offset, so the end is never before it. A read_committed
            # consumer's watermarks end at the last stable offset.
            low, end = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            at = None if tp.offset == OFFSET_INVALID else tp.offset
            rows.append(GroupOffsets(group, tp.topic, tp.partition, at, low, end))
        return rows
    except KafkaException as exc:
        raise TransientError(f"reading the offsets of consumer group {group}: {exc}") from exc
    finally:
        consumer.close()


def first_unconsumed(
    config: Config, starts: Iterable[Start], timeout_s: float = 10.0
) -> dict[Start, Unconsumed | None]:
    """For each (topic, partition, offset), the first record a ``read_committed`` consumer gets
    when it reads from there (None: it reaches the end first). One consumer, no group joined,
    nothing committed; a partition read from several places is read once per place, lowest first,
    and a place an earlier read already answers is not read again."""
    found: dict[Start, Unconsumed | None] = {}
    pending = sorted(set(starts))
    if not pending:
        return found
    deadline = time.monotonic() + timeout_s
    # One record per read is all it needs: fetch little (a whole first batch always comes).
    settings = {"enable.partition.eof": True, "max.partition.fetch.bytes": 65536}
    probe = make_consumer(config.kafka, config.group("lag-probe"), settings)
    try:
        for round_ in rounds(pending):
            wanted = {}
            for (topic, partition), offset in round_.items():
                known, first = answered_by((topic, partition, offset), found)
                if known:
                    found[(topic, partition, offset)] = first
                else:
                    wanted[(topic, partition)] = offset
            if wanted:
                found |= _read_first(probe, wanted, deadline)
    except KafkaException as exc:
        raise TransientError(f"reading the first unconsumed records: {exc}") from exc
    finally:
        probe.close()
    return found


def _read_first(
    probe: Consumer, wanted: Mapping[tuple[str, int], int], deadline: float
) -> dict[Start, Unconsumed | None]:
    """One read of each partition of ``wanted`` from its offset: its first record, or None when
    the consumer reports the partition's end first."""
    probe.assign([TopicPartition(t, p, o) for (t, p), o in wanted.items()])
    got: dict[Start, Unconsumed | None] = {}
    try:
        while len(got) < len(wanted):
            if time.monotonic() >= deadline:
                missing = ", ".join(
                    f"{t}[{p}]@{o}" for (t, p), o in wanted.items() if (t, p, o) not in got
                )
                raise TransientError(f"no answer reading {missing} for its lag in time")
            msg = probe.poll(min(0.2, max(0.0, deadline - time.monotonic())))
            if msg is None:
                continue
            topic, partition = str(msg.topic()), int(msg.partition() or 0)
            offset = wanted.get((topic, partition))
            if offset is None or (topic, partition, offset) in got:
                continue
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise TransientError(f"reading {topic}[{partition}] for its lag: {err.str()}")
            at = msg.offset()
            if at is not None and at >= 0 and at < offset:
                continue  # fetched for an earlier read of this partition
            if err is not None:
                got[(topic, partition, offset)] = None
            else:
                assert at is not None
                got[(topic, partition, offset)] = Unconsumed(at, msg.timestamp()[1])
    finally:
        probe.unassign()
    return got


def measure(
    config: Config,
    groups: Sequence[tuple[str, Sequence[str]]],
    timeout_s: float = 10.0,
    now_ms: int | None = None,
) -> list[PartitionLag]:
    """The lag of each (group, its topics) of ``groups`` on every partition, in messages and
    seconds: the offsets of every group, then one read of the first unconsumed record from each
    place a group stands that is not the end."""
    offsets = [
        o for group, topics in groups for o in group_offsets(config, group, topics, timeout_s)
    ]
    first = first_unconsumed(config, to_read(offsets), timeout_s)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return lag_rows(offsets, first, now)


def pipeline_lag(
    config: Config, stages: Sequence[StageSpec], timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Lag in messages and seconds of every stage's group on every topic it consumes."""
    return measure(config, [(s.consumer_group(config), s.inputs) for s in stages], timeout_s)


def group_members(config: Config, groups: list[str], timeout_s: float = 10.0) -> dict[str, int]:
    """How many members each consumer group has now (0 for an empty or unknown group)."""
    admin = AdminClient(client_config(config.kafka))
    try:
        futures = admin.describe_consumer_groups(groups, request_timeout=timeout_s)
        return {g: len(f.result(timeout=timeout_s).members) for g, f in futures.items()}
    except KafkaException as exc:
        raise TransientError(f"describing consumer groups: {exc}") from exc


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
