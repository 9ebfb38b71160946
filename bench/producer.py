"""Producer benchmark: xferlog lines into Kafka with the exactly-once producer, against kcat -P.

Same log, same broker, same run. Also the original scanner's bare parse-and-stat loop (regex and
os.stat per line, no delivery at all) over the same log, as the floor the producer must beat.

    python bench/producer.py --lines 1000000 --bootstrap 127.0.0.1:39092
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from producers.gantry.night import log_line, uploads, write_upload
from terra_xfer.config import Config
from terra_xfer.topics import create_topics
from tests.kafka_read import env_for

# The original TERRA-REF scanner's line pattern (it only matched ::ffff: hosts).
ORIGINAL = re.compile(
    r"^\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4} \d+ ::ffff:([\d.]+) (\d+) (.+?) b _ i r (\S+) ftp 0 \* c$"
)


def make_log(workdir: Path, lines: int, distinct: int) -> tuple[Path, Path]:
    cache = workdir / "cache"
    log = workdir / "xferlog"
    ups = list(uploads(datetime(2017, 8, 24, 19, tzinfo=UTC), distinct, seed=11, size=0))
    ups = [u for u in ups if u.whitelisted]
    for u in ups:
        write_upload(cache, u)
    encoded = [log_line(u) for u in ups]
    with log.open("wb") as out:
        for i in range(lines):
            out.write(encoded[i % len(encoded)])
    return cache, log


def original_scan(log: Path, cache: Path) -> float:
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


def producer_run(config: Config, lines: int) -> tuple[float, int]:
    env = {**os.environ, **env_for(config)}
    cmd = [
        sys.executable,
        "-m",
        "terra_xfer",
        "--log-json",
        "--log-level",
        "WARNING",
        "gantry",
        "--idle-exit",
        "1.5",
    ]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    elapsed = time.perf_counter() - started - 1.5
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return lines / elapsed, rss_kb // 1024


def kcat_run(bootstrap: str, log: Path, partitions: int, lines: int) -> float:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        raise SystemExit("kcat is not installed (Debian: apt-get install kcat)")
    topic = f"bench-kcat-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
    started = time.perf_counter()
    subprocess.run(
        [
            kcat,
            "-P",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-l",
            str(log),
            "-X",
            "enable.idempotence=true",
            "-X",
            "linger.ms=5",
            "-X",
            "compression.type=lz4",
        ],
        check=True,
    )
    return lines / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--distinct", type=int, default=20_000, help="distinct files in the cache")
    ap.add_argument("--bootstrap", default="127.0.0.1:39092")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp:
        cache, log = make_log(Path(tmp), args.lines, args.distinct)
        base = Config()
        config = dataclasses.replace(
            base,
            kafka=dataclasses.replace(
                base.kafka,
                bootstrap_servers=args.bootstrap,
                topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
            ),
            gantry=dataclasses.replace(
                base.gantry,
                cache_root=cache,
                xferlog=log,
                log_root="/gantry_data",
            ),
        )
        create_topics(config)
        scan = original_scan(log, cache)
        kcat = kcat_run(args.bootstrap, log, config.kafka.partitions, args.lines)
        events, rss = producer_run(config, args.lines)
    figures = {
        "lines": args.lines,
        "producer_events_per_s": round(events),
        "kcat_lines_per_s": round(kcat),
        "ratio_to_kcat": round(events / kcat, 3),
        "original_scan_lines_per_s": round(scan),
        "producer_peak_rss_mb": rss,
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
