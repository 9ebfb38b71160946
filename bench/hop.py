"""A bare transactional hop: what moving one record through a stage costs before any of its logic.

The stages' own Kafka plumbing (a static-member consumer, ``consume_ready`` batches of 500, the
transactional producer, offsets sent with the outputs, one transaction per batch), with a handler
that passes each record's bytes on unchanged: no decoding, folding, encoding or disk. Its rate and
its CPU per record (the hop's process, and the broker's) are the floor under every stage of §3b,
whose files each cross several such hops (the topics' offsets per file say how many records).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from bench.cpu import CpuMeter
from terra_xfer.config import KafkaConfig
from terra_xfer.kafka import TxProducer, check, consume_ready, member_consumer, next_offsets

BATCH = 500  # the stages' batch size
CHUNK = 10_000  # records per transaction while filling the input topic


def hop_run(
    bootstrap: str, records: int, size: int, partitions: int, broker_pid: int | None
) -> dict[str, Any]:
    """Fill a topic with ``records`` of ``size`` bytes, then move them all through one hop."""
    kafka = KafkaConfig(bootstrap_servers=bootstrap)
    run = uuid.uuid4().hex[:8]
    source, sink = f"bench-hop-in-{run}", f"bench-hop-out-{run}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(t, partitions, 1) for t in (source, sink)]
    ).values():
        future.result()
    try:
        _fill(kafka, source, records, size)
        return _hop(kafka, source, sink, records, broker_pid, run) | {"records_size": size}
    finally:
        for future in admin.delete_topics([source, sink]).values():
            future.result()


def _fill(kafka: KafkaConfig, topic: str, records: int, size: int) -> None:
    producer = TxProducer(kafka, f"bench-hop-fill-{uuid.uuid4().hex[:8]}")
    value = os.urandom(size)
    try:
        producer.init()
        for first in range(0, records, CHUNK):
            with producer.transaction():
                last = min(records, first + CHUNK)
                producer.produce_all(topic, ((f"k{i}", value) for i in range(first, last)))
    finally:
        producer.close()


def _hop(
    kafka: KafkaConfig,
    source: str,
    sink: str,
    records: int,
    broker_pid: int | None,
    run: str,
) -> dict[str, Any]:
    consumer = member_consumer(kafka, f"bench-hop-{run}")
    producer = TxProducer(kafka, f"bench-hop-{run}")
    pids = {"hop": os.getpid()} | ({} if broker_pid is None else {"broker": broker_pid})
    try:
        producer.init()
        consumer.subscribe([source])
        moved = 0
        started: float | None = None
        meter = CpuMeter(pids)
        while moved < records:
            batch = [m for m in consume_ready(consumer, BATCH, 1.0) if check(m) is not None]
            if not batch:
                continue
            if started is None:  # timed from the first batch: the group's join is not a hop
                started = time.perf_counter()
                meter.start()
            with producer.transaction():
                for msg in batch:
                    producer.produce(sink, msg.value() or b"", msg.key())
                producer.send_offsets(consumer, next_offsets(batch))
            moved += len(batch)
        seconds = time.perf_counter() - (started or time.perf_counter())
        cpu = meter.read()
    finally:
        producer.close()
        consumer.close()
    return {
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": records / max(seconds, 1e-3),
        "cpu_us_per_record": {n: round(s * 1e6 / records, 1) for n, s in cpu.items()},
    }
