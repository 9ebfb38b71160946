"""§1 and §2: xferlog lines into Kafka, against kcat and against Kafka's own producer tool.

The real exactly-once producer (``terra-xfer gantry``, a subprocess) reads a log of ``lines``
lines naming ``distinct`` cache files; in the same run ``kcat -P`` sends the same lines raw to the
same broker, the original TERRA-REF scanner's bare pass (its regex and one ``os.stat`` per line,
no delivery at all) reads the same log, and Kafka's ProducerPerformance sends as many records of
the same size.

The producer's rate is taken from its own records (CreateTime of the first and last event): its
events are produced a chunk at a time, after the chunk is parsed, so the first chunk is left out
of the count; process start-up (interpreter, ``init_transactions``, reading the last checkpoint)
is reported apart.

    PYTHONPATH=. python -m bench.producer --lines 100000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition

from bench.figures import Figure, Goal, Section
from bench.up_run import cli_command, py_spy
from bench.workspace import Workspace, scratch_topics, workspace
from producers.gantry.night import log_line, uploads, write_upload
from terra_xfer.kafka_tools import run_tool

# The original TERRA-REF scanner's line pattern (it only matched ::ffff: hosts).
ORIGINAL = re.compile(
    r"^\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4} \d+ ::ffff:([\d.]+) (\d+) (.+?) b _ i r (\S+) ftp 0 \* c$"
)
IDLE_EXIT_S = 1.5
SITE = "ua-mac"  # the site of the benchmark's cache (the config's default)
# The same producer settings as terra-xfer's transactional producer, without the transactions.
KCAT_SETTINGS = ("-X", "enable.idempotence=true", "-X", "linger.ms=5", "-X", "compression.type=lz4")


def make_log(workdir: Path, lines: int, distinct: int) -> tuple[Path, Path]:
    """A cache of ``distinct`` files and an xferlog of ``lines`` lines cycling over them."""
    cache, log = workdir / "cache", workdir / "xferlog"
    ups = [
        u for u in uploads(datetime(2017, 8, 24, 19, tzinfo=UTC), distinct, 11, 0) if u.whitelisted
    ]
    for u in ups:
        write_upload(cache, u)
    encoded = [log_line(u, size=(cache / u.rel).stat().st_size) for u in ups]
    with log.open("wb") as out:
        for i in range(lines):
            out.write(encoded[i % len(encoded)])
    os.sync()
    return cache, log


def original_scan(log: Path, cache: Path) -> float:
    """Lines/s of the original scanner's pass: regex and stat per line, nothing delivered."""
    started = time.perf_counter()
    n = 0
    with log.open() as fh:
        for line in fh:
            m = ORIGINAL.match(line.rstrip("\n"))
            if m:
                with contextlib.suppress(OSError):
                    os.stat(str(cache) + m.group(3)[len("/gantry_data") :])
            n += 1
    return n / (time.perf_counter() - started)


def first_and_last_ms(bootstrap: str, topic: str) -> tuple[int, int, float]:
    """(first CreateTime, last CreateTime, mean value size) of a topic's committed records, from
    a few records at each end of every partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    first, last, sizes = None, None, []
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            for start in (low, max(low, high - 8)):
                for msg in _read_from(consumer, topic, p, start, high):
                    ts = msg.timestamp()[1]
                    first = ts if first is None else min(first, ts)
                    last = ts if last is None else max(last, ts)
                    sizes.append(len(msg.value() or b""))
    finally:
        consumer.close()
    assert first is not None and last is not None, f"{topic} is empty"
    return first, last, sum(sizes) / len(sizes)


def _read_from(consumer: Consumer, topic: str, p: int, start: int, high: int) -> list[Message]:
    """Up to 8 committed messages of one partition from ``start`` (stops at the end)."""
    consumer.assign([TopicPartition(topic, p, start)])
    got: list[Message] = []
    deadline = time.monotonic() + 10
    while len(got) < 8 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            position = consumer.position([TopicPartition(topic, p)])[0].offset
            if position >= high:
                break
            continue
        if msg.error() is None:
            got.append(msg)
    return got


def producer_run(
    ws: Workspace, cache: Path, log: Path, lines: int, profile: Path | None = None
) -> dict[str, float]:
    """Run ``terra-xfer gantry`` over the whole log; its rate, start-up and peak RSS (with
    ``profile``: under py-spy, whose own RSS is then the one reported)."""
    settings = ws.settings(cache_root=cache)
    settings["gantry"]["xferlog"] = log
    config = ws.write(settings)
    cmd = cli_command(ws.config_path, "gantry", "--idle-exit", str(IDLE_EXIT_S))
    if profile is not None:
        cmd = py_spy(profile) + cmd
    began = time.perf_counter()
    with (ws.root / "gantry.log").open("ab") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began - IDLE_EXIT_S
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"terra-xfer gantry exited with {proc.returncode}")
    first, last, event_bytes = first_and_last_ms(ws.bootstrap, config.topic("files.arrived"))
    chunk = config.gantry.chunk_lines
    steady = (lines - chunk) / max(1e-3, (last - first) / 1000)
    return {
        "events_per_s": steady,
        "wall_s": wall,
        "startup_s": max(0.0, wall - lines / steady),
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "event_bytes": event_bytes,
    }


def kcat_run(bootstrap: str, log: Path, partitions: int, lines: int) -> float:
    """Lines/s of ``kcat -P`` sending each line of the log as one message (idempotent, lz4)."""
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        raise RuntimeError("kcat is not installed (Debian: apt-get install kcat)")
    topic = f"bench-kcat-{uuid.uuid4().hex[:8]}"
    with scratch_topics(bootstrap, topic, partitions=partitions):
        started = time.perf_counter()
        subprocess.run(
            [kcat, "-P", "-b", bootstrap, "-t", topic, "-l", str(log), *KCAT_SETTINGS],
            check=True,
        )
        return lines / (time.perf_counter() - started)


def perf_tool_run(
    bootstrap: str, kafka_version: str, records: int, size: int, payloads: Path | None = None
) -> float:
    """Records/s of Kafka's ProducerPerformance (idempotent, acks=all, lz4, linger 5 ms): random
    records of ``size`` bytes, or lines picked at random from the file ``payloads``."""
    topic = f"bench-perf-{uuid.uuid4().hex[:8]}"
    props = [f"bootstrap.servers={bootstrap}", "acks=all", "enable.idempotence=true"]
    props += ["compression.type=lz4", "linger.ms=5", "batch.size=1000000"]
    args = ["--topic", topic, "--num-records", str(records), "--throughput", "-1"]
    args += ["--payload-file", str(payloads)] if payloads else ["--record-size", str(size)]
    with scratch_topics(bootstrap, topic):
        done = run_tool(kafka_version, "producer-perf-test", [*args, "--producer-props", *props])
    if done.returncode != 0:
        raise RuntimeError(f"ProducerPerformance failed: {done.stderr.strip()[-300:]}")
    summary = [line for line in done.stdout.splitlines() if "records sent" in line][-1]
    return float(re.search(r"([\d.]+) records/sec", summary).group(1))  # type: ignore[union-attr]


def python_floor_run(bootstrap: str, log: Path, cache: Path, chunk: int) -> float:
    """Events/s of the fastest producer any Python code of ours could be: the log's files already
    resolved and each file's FileArrived already encoded, so each line costs only the ``os.lstat``
    of its file and one ``produce`` into the same transactional producer, a transaction per
    ``chunk`` lines."""
    from schemas.codec import Codec
    from terra_xfer.config import KafkaConfig
    from terra_xfer.kafka import TxProducer
    from tests.samples import sample

    with log.open() as fh:
        matches = [ORIGINAL.match(line.rstrip("\n")) for line in fh]
    paths = [str(cache) + m.group(3)[len("/gantry_data") :] for m in matches if m]
    rels = [p[len(str(cache)) + 1 :] for p in paths]
    keys = [f"{SITE}/{rel}" for rel in rels]
    codec, template = Codec(), sample("FileArrived")
    encoded = {
        rel: codec.encode("FileArrived", template | {"key": f"{SITE}/{rel}", "path": rel})
        for rel in set(rels)
    }
    values = [encoded[rel] for rel in rels]
    topic = f"bench-floor-{uuid.uuid4().hex[:8]}"
    with scratch_topics(bootstrap, topic):
        producer = TxProducer(KafkaConfig(bootstrap_servers=bootstrap), topic)
        try:
            producer.init()
            lstat, started = os.lstat, time.perf_counter()
            for first in range(0, len(paths), chunk):
                with producer.transaction():
                    events = []
                    for i in range(first, min(len(paths), first + chunk)):
                        lstat(paths[i])
                        events.append((keys[i], values[i]))
                    producer.produce_all(topic, events)
            return len(paths) / (time.perf_counter() - started)
        finally:
            producer.close()


def build_compiled_floor(workdir: Path) -> Path | str:
    """``bench/compiled_floor.c`` built with the system's C compiler into ``workdir``; or why not.

    It links the librdkafka that confluent-kafka ships (the producer's own client version) when
    there is one, else the system's; either way it compiles against the system's headers
    (Debian: librdkafka-dev), whose functions it uses are the same in every 2.x release.
    """
    import confluent_kafka

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return "no C compiler"
    exe = workdir / "compiled_floor"
    source = Path(__file__).with_name("compiled_floor.c")
    shipped = sorted(
        Path(confluent_kafka.__file__).parent.parent.glob("confluent_kafka.libs/librdkafka*.so*")
    )
    link = [str(shipped[0]), f"-Wl,-rpath,{shipped[0].parent}"] if shipped else ["-lrdkafka"]
    built = subprocess.run(
        [compiler, "-O2", "-o", str(exe), str(source), *link], capture_output=True, text=True
    )
    if built.returncode != 0:
        return f"it did not build (Debian: librdkafka-dev): {built.stderr.strip()[-200:]}"
    return exe


def compiled_floor(
    exe: Path, bootstrap: str, topic: str, log: Path, cache: Path, chunk: int
) -> tuple[int, float, str]:
    """(events, seconds, librdkafka version) of the compiled floor over ``log``, into ``topic``."""
    from schemas.codec import current_schemas

    header = current_schemas()["FileArrived"].header.hex()
    args = [bootstrap, topic, topic, str(log), str(cache), "/gantry_data", SITE, str(chunk), header]
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiled floor failed: {done.stderr.strip()[-300:]}")
    events, seconds, version = done.stdout.split()
    return int(events), float(seconds), version


def compiled_floor_run(
    bootstrap: str, log: Path, cache: Path, workdir: Path, chunk: int
) -> tuple[float, str] | str:
    """(events/s, librdkafka version) of the producer's per-line work in C; or why it could not
    be measured."""
    exe = build_compiled_floor(workdir)
    if isinstance(exe, str):
        return f"not available: {exe}"
    topic = f"bench-compiled-{uuid.uuid4().hex[:8]}"
    with scratch_topics(bootstrap, topic):
        events, seconds, version = compiled_floor(exe, bootstrap, topic, log, cache, chunk)
    return events / max(seconds, 1e-3), version


def producer_section(lines: int, run: dict[str, float], kcat: float, scan: float) -> Section:
    """§1: the producer against kcat and against the original scan; its peak RSS."""
    events = run["events_per_s"]
    name = "`terra-xfer gantry` events/s"
    s = Section("1", f"Producer: {lines:,}-line xferlog into Kafka, exactly once")
    s.figures += [
        Figure(
            name,
            events,
            "events/s",
            "`kcat -P`, same lines",
            kcat,
            Goal("ratio_at_least", 0.5),
            limit_unit="lines/s",
        ),
        Figure(
            name,
            events,
            "events/s",
            "original scanner's bare regex + stat pass (no delivery)",
            scan,
            Goal("ratio_at_least", 1.0),
            limit_unit="lines/s",
        ),
        Figure(
            "`terra-xfer gantry` peak RSS", run["peak_rss_mb"], "MB", goal=Goal("value_below", 150)
        ),
        Figure(
            "Python floor: one lstat + one produce per line, nothing else",
            run["python_floor_per_s"],
            "events/s",
            "`kcat -P`, same lines",
            kcat,
            limit_unit="lines/s",
        ),
    ]
    if "compiled_floor_per_s" in run:
        s.figures.append(
            Figure(
                "compiled floor: the same per-line work in C on librdkafka (split, lstat, Avro,"
                " exactly-once produce)",
                run["compiled_floor_per_s"],
                "events/s",
                "`kcat -P`, same lines",
                kcat,
                limit_unit="lines/s",
            )
        )
    s.details = {k: round(v, 2) for k, v in run.items()} | {
        "lines": lines,
        "kcat_lines_per_s": round(kcat),
        "original_scan_lines_per_s": round(scan),
    }
    return s


def ceiling_section(
    lines: int, size: int, tool: dict[str, float], kcat: float, events: float
) -> Section:
    """§2: Kafka's ProducerPerformance on the same broker, with kcat and our producer beside it."""
    s = Section("2", f"Broker ceiling: ProducerPerformance, {lines:,} records")
    random_name = f"ProducerPerformance, random {size} B records (our events' mean size)"
    lines_name = "ProducerPerformance, the log's lines as records"
    s.figures += [
        Figure(random_name, tool["random"], "records/s"),
        Figure(lines_name, tool["lines"], "records/s"),
        Figure("`kcat -P`, the log's lines", kcat, "records/s", lines_name, tool["lines"]),
        Figure("`terra-xfer gantry` events", events, "records/s", random_name, tool["random"]),
    ]
    s.details = {"records": lines, "record_bytes": size}
    return s


def sections(
    base: Path, bootstrap: str, kafka_version: str, lines: int, distinct: int
) -> list[Section]:
    """§1 (producer against kcat and the original scan, peak RSS) and §2 (the broker's ceiling)."""
    work = base / "producer"
    cache, log = make_log(work, lines, distinct)
    payloads = work / "payloads.txt"
    with log.open("rb") as fh:
        payloads.write_bytes(b"".join(fh.readline() for _ in range(min(lines, distinct))))
    try:
        scan = original_scan(log, cache)
        kcat = kcat_run(bootstrap, log, 6, lines)
        with workspace(base, "producer", bootstrap) as ws:
            run = producer_run(ws, cache, log, lines)
        size = max(1, round(run["event_bytes"]))
        run["python_floor_per_s"] = python_floor_run(bootstrap, log, cache, 10_000)
        compiled = compiled_floor_run(bootstrap, log, cache, work, 10_000)
        if isinstance(compiled, str):
            compiled_note = compiled
        else:
            run["compiled_floor_per_s"], compiled_note = compiled[0], f"librdkafka {compiled[1]}"
        tool = {
            "random": perf_tool_run(bootstrap, kafka_version, lines, size),
            "lines": perf_tool_run(bootstrap, kafka_version, lines, 0, payloads),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one = producer_section(lines, run, kcat, scan)
    one.details["distinct_files"] = distinct
    if compiled_note:
        one.details["compiled_floor"] = compiled_note
    return [one, ceiling_section(lines, size, tool, kcat, run["events_per_s"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--distinct", type=int, default=20_000, help="distinct files in the cache")
    ap.add_argument("--bootstrap", default="127.0.0.1:39092")
    ap.add_argument("--kafka-version", default="4.4.0")
    args = ap.parse_args()
    base = Path("var/bench").resolve()
    found = sections(base, args.bootstrap, args.kafka_version, args.lines, args.distinct)
    print(json.dumps([s.to_dict() for s in found], indent=2))


if __name__ == "__main__":
    main()
