"""What a chaos run left behind, read once every stage has stopped, for the invariants.

The topics are read whole; files.state record by record (every record, not only the last of each
key) and checked in one pass as it is read, so memory holds one record per key however long the
night. ``terra-xfer status --all --json`` and ``report --json`` run as the operator would run them, with
the run's configuration and environment, on a status index of their own built from the topic.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.kafka import client_config
from terra_xfer.reading import open_transactions, read_to_end
from terra_xfer.topics import (
    DEADLETTER,
    FILES_ARRIVED,
    FILES_DELETED,
    FILES_INGESTED,
    FILES_STATE,
    FILES_TRANSFERRED,
)
from tests.chaos import invariants
from tests.chaos.world import stamp
from tests.doubles.clowder_api import ClowderDouble
from tests.kafka_read import read_all

CLI_TIMEOUT_S = 300.0


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            yield path.relative_to(root).as_posix(), path


def settled(config: Config, topics: tuple[str, ...], timeout_s: float = 30.0) -> dict[str, int]:
    """Wait until no transaction is open on ``topics`` (last stable offset = end everywhere), at
    most ``timeout_s``: a stage stopped or killed mid-step leaves one open until the broker times
    it out, and read_committed readers see nothing past it meanwhile. Returns the partitions still
    held back when the wait ends (``topic[p]`` -> offsets held back), for the log."""
    admin = AdminClient(client_config(config.kafka))
    names = [config.topic(t) for t in topics]
    meta = admin.list_topics(timeout=10)
    wanted = [
        TopicPartition(n, p) for n in names if n in meta.topics for p in meta.topics[n].partitions
    ]
    deadline = time.monotonic() + timeout_s
    while True:
        held = {
            f"{tp.topic}[{tp.partition}]": end - stable
            for tp, (stable, end) in open_transactions(admin, wanted).items()
        }
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.5)  # the broker ends timed-out transactions on its own schedule


def latest_states(config: Config) -> dict[str, str]:
    return {v["key"]: v["state"] for _, v in read_all(config.kafka, config.topic(FILES_STATE))}


def state_records(config: Config) -> Iterator[invariants.StateRecord]:
    """Every files.state record as (partition, offset, FileState), each partition in offset order
    (tombstones, which the keeper never writes, are left out)."""
    codec = Codec()
    for msg in read_to_end(config.kafka, config.topic(FILES_STATE), timeout_s=300):
        partition, offset, value = msg.partition(), msg.offset(), msg.value()
        if value is not None and partition is not None and offset is not None:
            yield partition, offset, codec.decode(value)[1]


def catalog_entries(clowder: ClowderDouble) -> list[tuple[str, str]]:
    store = clowder.store
    files = store.rows("SELECT d.name, f.filename FROM files f JOIN datasets d ON d.id = f.dataset")
    named = store.rows(
        "SELECT 'dataset', name FROM datasets UNION ALL SELECT 'collection', name FROM collections"
    )
    docs = store.rows("SELECT target, content FROM metadata")
    return [
        *((str(d), str(f)) for d, f in files),
        *((f"<{kind}>", str(name)) for kind, name in named),
        *((f"<metadata of {t}>", hashlib.sha256(str(c).encode()).hexdigest()) for t, c in docs),
    ]


def cli_json(config_path: Path, env: dict[str, str], work: Path, *argv: str) -> Any:
    """The JSON ``terra-xfer <argv> --json`` prints, on a status index under ``work/cli``."""
    index = work / "cli" / "status.sqlite"
    index.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "terra_xfer", "--config", str(config_path), *argv, "--json"],
        env={**env, "TERRA_XFER_STATUS_INDEX_PATH": str(index)},
        capture_output=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"terra-xfer {' '.join(argv)} failed: {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout)


def _events(config: Config, topic: str, record: str) -> list[dict[str, Any]]:
    return [v for name, v in read_all(config.kafka, config.topic(topic)) if name == record]


def evidence(
    config: Config, config_path: Path, env: dict[str, str], work: Path, clowder: ClowderDouble
) -> invariants.Found:
    """Everything the invariants look at, read after every stage stopped (and after the
    transactions they left open have ended, as far as that happens within a while)."""
    settled(config, (FILES_STATE, FILES_ARRIVED, DEADLETTER))
    trail = invariants.follow(state_records(config))
    arrived = _events(config, FILES_ARRIVED, "FileArrived")
    letters = [v for _, v in read_all(config.kafka, config.topic(DEADLETTER))]
    return invariants.Found(
        states={key: record[2]["state"] for key, record in trail.latest.items()},
        dest_paths={v["key"]: v["dest_path"] for v in arrived},
        destination={
            rel: hashlib.sha256(p.read_bytes()).hexdigest() for rel, p in walk(work / "destination")
        },
        cache={rel: stamp(p) for rel, p in walk(work / "cache")},
        deletions=_events(config, FILES_DELETED, "FileDeleted"),
        dead_letters=[v["raw"] for v in letters],
        catalog=catalog_entries(clowder),
        trail=trail,
        arrived=arrived,
        transferred=_events(config, FILES_TRANSFERRED, "FileTransferred"),
        ingested=_events(config, FILES_INGESTED, "FileIngested"),
        dead_sources=[(v["source"], v["reason"]) for v in letters],
        status=cli_json(config_path, env, work, "status", "--all"),
        report=cli_json(config_path, env, work, "report")["files"],
    )
