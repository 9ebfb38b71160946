"""A new replica's copy of files.state: rebuilt from the topic against seeded from a peer's.

    PYTHONPATH=. .venv/bin/python -m bench.seed [--files 1000000] [--results bench/seed.json]

Writes ``--files`` DONE FileStates (each with its six-transition history, 1.2 KB, as the keeper
writes them) to a files.state topic of their own on the demo's broker, one record a file (a
compacted topic's shape). Then, for the state keeper's copy and the sweeper's view: a copy
rebuilt from the whole topic (what a new replica did before), and a copy seeded from that one
over HTTP (``[status] seed_from``) then caught up, each timed from its construction to the end
of its first catch-up, with the copy's bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.keeper_replay import lives
from bench.machine import describe
from bench.workspace import broker, workspace
from consumers.state.keeper_store import KeeperCopy
from consumers.state.view import StateFollower, TopicFollower
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.metrics_http import Health, serve
from terra_xfer.topics import FILES_STATE


def fill(config: Config, files: int) -> int:
    """Write ``files`` DONE states to files.state; the bytes written."""
    codec = Codec()
    (last,) = [states[-1] for states in lives(1)]
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers, "linger.ms": 50})
    topic = config.topic(FILES_STATE)
    written = 0
    for i in range(files):
        key = f"ua-mac/Level_0/seed/{i:09d}"
        value = codec.encode("FileState", {**last, "key": key, "path": key})
        written += len(value)
        while True:
            try:
                producer.produce(topic, value, key.encode())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0
    return written


def timed(make: Any) -> tuple[TopicFollower, float, int]:
    """A follower made by ``make`` and caught up: it, the seconds that took, records applied."""
    began = time.monotonic()
    follower: TopicFollower = make()
    applied = follower.catch_up(timeout_s=120)
    return follower, time.monotonic() - began, applied


def measure(config: Config, root: Path, kind: str, port: int) -> dict[str, Any]:
    seeding = dataclasses.replace(
        config,
        status=dataclasses.replace(config.status, seed_from=(f"http://127.0.0.1:{port}",)),
    )

    def make(cfg: Config, home: str) -> TopicFollower:
        if kind == "state-keeper":
            return KeeperCopy(cfg, root / home / "keeper.sqlite")
        return StateFollower(cfg, root / home / "sweeper-view.sqlite", records=False)

    rebuilt, rebuild_s, rebuilt_records = timed(lambda: make(config, "rebuilt"))
    seeded, seed_s, seeded_records = timed(lambda: make(seeding, "seeded"))
    try:
        size = _bytes(rebuilt._file().path)
        assert seeded._stored_offsets() == rebuilt._stored_offsets()
        return {
            "rebuilt_s": round(rebuild_s, 1),
            "rebuilt_records": rebuilt_records,
            "seeded_s": round(seed_s, 1),
            "seeded_records_read": seeded_records,
            "copy_bytes": size,
            "seeded_mb_per_s": round(size / 1e6 / seed_s, 1),
        }
    finally:
        seeded.close()
        rebuilt.close()


def _bytes(path: Path) -> int:
    """The database's size in pages (some may still be in its write-ahead log)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(size)
    finally:
        db.close()


def run(files: int, base: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"files": files}
    with broker() as (demo, _started), workspace(base, "seed", demo.kafka.bootstrap_servers) as ws:
        results["machine"] = describe(demo.broker.kafka_version)
        config = ws.write(ws.settings())
        began = time.monotonic()
        results["topic_bytes"] = fill(config, files)
        results["fill_s"] = round(time.monotonic() - began, 1)
        server = serve(0, Health())
        try:
            for kind in ("state-keeper", "sweeper-view"):
                results[kind] = measure(config, ws.root, kind, server.port)
                print(kind, json.dumps(results[kind]), flush=True)
        finally:
            server.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--base", type=Path, default=Path("var") / "bench")
    parser.add_argument("--results", type=Path, default=Path("bench") / "seed.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = run(args.files, args.base)
    text = json.dumps(results, indent=2)
    print(text)
    if args.results is not None:
        args.results.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
