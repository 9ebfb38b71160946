"""A bare transactional hop: what moving one record through a stage costs before any of its logic.

The stages' own Kafka plumbing (a static-member consumer, ``consume_ready`` batches of 500, the
transactional producer, offsets sent with the outputs, one transaction per batch), with a handler
that passes each record's bytes on unchanged: no decoding, folding, encoding or disk. Its rate and
its CPU per record (the hop's process, and the broker's) are the floor under every stage of §3b,
whose files each cross several such hops (the topics' offsets per file say how many records).

``codec_floor_run`` does the same with our events and codec: a file's records (its four events, and
four FileStates of a growing history) are decoded and encoded again at the hop, and read and decoded
once more by a reader that produces nothing (as the state views do). :func:`floor_ms_per_file`
turns those per-record costs and a §3b run's records per file into the CPU a file costs in Kafka
and Avro alone, every stage's own logic left out: the floor of this design in Python.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer

from bench.cpu import CpuMeter
from bench.workspace import scratch_topics
from schemas.codec import Codec
from terra_xfer.config import KafkaConfig
from terra_xfer.kafka import (
    TxProducer,
    check,
    consume_ready,
    make_consumer,
    member_consumer,
    next_offsets,
)

BATCH = 500  # the stages' batch size
CHUNK = 10_000  # records per transaction while filling the input topic
# How many consumer groups decode each topic's records in `up` (views included): files.arrived by
# the state keeper and the batcher; files.transferred by the keeper, ingest and the deleter;
# files.state by the batcher's and the sweeper's views; the rest by the keeper alone.
READERS = {
    "files.arrived": 2,
    "batches.submitted": 2,
    "files.transferred": 3,
    "files.ingested": 1,
    "files.deleted": 1,
    "files.state": 2,
}
EVENTS = ("FileArrived", "FileTransferred", "FileIngested", "FileDeleted")
STATES = ("ARRIVED", "BATCHED", "TRANSFERRED", "INGESTED")


def hop_run(
    bootstrap: str, records: int, size: int, partitions: int, broker_pid: int | None
) -> dict[str, Any]:
    """Fill a topic with ``records`` of ``size`` bytes, then move them all through one hop."""
    kafka = KafkaConfig(bootstrap_servers=bootstrap)
    run = uuid.uuid4().hex[:8]
    source, sink = f"bench-hop-in-{run}", f"bench-hop-out-{run}"
    with scratch_topics(bootstrap, source, sink, partitions=partitions):
        _fill(kafka, source, records, size)
        return _hop(kafka, source, sink, records, broker_pid, run) | {"records_size": size}


def _fill(kafka: KafkaConfig, topic: str, records: int, size: int) -> None:
    value = os.urandom(size)
    _fill_with(kafka, topic, ((f"k{i}", value) for i in range(records)))


def _fill_with(kafka: KafkaConfig, topic: str, records: Iterator[tuple[str, bytes]]) -> None:
    producer = TxProducer(kafka, f"bench-hop-fill-{uuid.uuid4().hex[:8]}")
    try:
        producer.init()
        done = False
        while not done:
            chunk = [r for _, r in zip(range(CHUNK), records, strict=False)]
            done = len(chunk) < CHUNK
            with producer.transaction():
                producer.produce_all(topic, chunk)
    finally:
        producer.close()


def file_records(files: int, codec: Codec, states: bool) -> Iterator[tuple[str, bytes]]:
    """(key, value) of each file's records as the pipeline writes them: its four events, or
    (``states``) four FileStates whose history grows by one transition each (§3b: 4.1 a file)."""
    from tests.samples import sample

    for i in range(files):
        key = f"ua-mac/bench/2017-08-24/2017-08-24__12-40-01-916/f{i:07d}.bin"
        if not states:
            for name in EVENTS:
                yield key, codec.encode(name, sample(name) | {"key": key, "path": key[7:]})
            continue
        state = sample("FileState") | {"key": key, "path": key[7:]}
        history = []
        for n, name in enumerate(STATES):
            history.append({"state": name, "at_ms": state["arrived_ms"] + n, "evidence": {}})
            yield key, codec.encode("FileState", state | {"state": name, "history": history})


def codec_floor_run(bootstrap: str, files: int, partitions: int) -> dict[str, dict[str, float]]:
    """Process CPU per record (µs) of our events and of FileStates, over ``files`` files' records:
    ``hop`` consumes, decodes, encodes, produces and commits each; ``read`` consumes and decodes;
    for states also ``head``: consumes and decodes the fields before the history, as the views do.
    """
    from consumers.state.view import HEAD_ENDS_AT

    kafka = KafkaConfig(bootstrap_servers=bootstrap)
    codec = Codec()

    def recode(value: bytes) -> bytes:
        name, decoded = codec.decode(value)
        return codec.encode(name, decoded)

    def full(value: bytes) -> object:
        return codec.decode(value)

    def head(value: bytes) -> object:
        return codec.decode_head(value, HEAD_ENDS_AT)

    out: dict[str, dict[str, float]] = {}
    for kind, states in (("events", False), ("states", True)):
        run = uuid.uuid4().hex[:8]
        source, sink = f"bench-floor-{kind}-{run}", f"bench-floor-out-{run}"
        records = files * (len(STATES) if states else len(EVENTS))
        with scratch_topics(bootstrap, source, sink, partitions=partitions):
            _fill_with(kafka, source, file_records(files, codec, states))
            hop = _hop(kafka, source, sink, records, None, run, recode)
            out[kind] = {
                "hop": hop["cpu_us_per_record"]["hop"],
                "read": _read(kafka, source, records, f"{run}-full", full),
            }
            if states:
                out[kind]["head"] = _read(kafka, source, records, f"{run}-head", head)
    return out


def _read(
    kafka: KafkaConfig, topic: str, records: int, run: str, decode: Callable[[bytes], object]
) -> float:
    """Process CPU per record (µs) of consuming and decoding every record, producing nothing."""
    consumer: Consumer = make_consumer(kafka, f"bench-floor-read-{run}")
    try:
        consumer.subscribe([topic])
        read = 0
        meter: CpuMeter | None = None
        while read < records:
            batch = [m for m in consume_ready(consumer, BATCH, 1.0) if check(m) is not None]
            if batch and meter is None:  # timed from the first batch, as the hop
                meter = CpuMeter({"read": os.getpid()}).start()
            for msg in batch:
                decode(msg.value() or b"")
            read += len(batch)
        cpu = meter.read() if meter is not None else {}
    finally:
        consumer.close()
    return round(cpu.get("read", 0.0) * 1e6 / records, 1)


def floor_ms_per_file(
    floor: Mapping[str, Mapping[str, float]], offsets_per_file: Mapping[str, float]
) -> float:
    """Process CPU (ms) a file costs in Kafka and Avro alone, every stage's own logic left out.

    Each record a file makes is written once (the hop less the read: encoding, producing, the
    transaction) and read by each of its topic's readers: events decoded whole, states only up to
    their history, as the views read them. ``offsets_per_file`` holds a run's records per file by
    topic name without the run's prefix; topics no stage reads (checkpoints, dead letters) are
    left out, and so is the broker's CPU (measured with the run itself).
    """
    events, states = floor["events"], floor["states"]
    us = 0.0
    for topic, n in offsets_per_file.items():
        if topic not in READERS:
            continue
        if topic == "files.state":
            us += n * (states["hop"] - states["read"] + READERS[topic] * states["head"])
        else:
            us += n * (events["hop"] - events["read"] + READERS[topic] * events["read"])
    return round(us / 1000, 3)


def _hop(
    kafka: KafkaConfig,
    source: str,
    sink: str,
    records: int,
    broker_pid: int | None,
    run: str,
    recode: Callable[[bytes], bytes] | None = None,
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
                    value = msg.value() or b""
                    producer.produce(sink, recode(value) if recode else value, msg.key())
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
