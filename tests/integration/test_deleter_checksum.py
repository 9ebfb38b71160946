"""The deleter on the real broker with the local backend: the destination copy is confirmed against
the checksum the transfer recorded, for small files and for large ones (checked on two threads)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from consumers.deleter import OVERLAP_BYTES, Deleter
from consumers.transfer.local import LocalTransfer
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.kafka import PARTITIONER
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import read_all
from tests.pipeline import run_until

pytestmark = pytest.mark.broker
FOLDER = "LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916"
SIZES = {"small": 4096, "large": OVERLAP_BYTES + 4096}


@pytest.fixture
def backend(pipeline_config: Config) -> Iterator[LocalTransfer]:
    t = pipeline_config.transfer
    transfer = LocalTransfer(t.destination_root, t.state_dir)
    yield transfer
    transfer.close()


def cache_file(config: Config, name: str, data: bytes) -> Path:
    path = config.gantry.cache_root / FOLDER / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def transferred(config: Config, path: Path, checksum: str, dest: bytes | None) -> dict[str, Any]:
    """A FileTransferred event for ``path`` whose destination copy holds ``dest``."""
    rel = str(path.relative_to(config.gantry.cache_root))
    dest_rel = f"raw/{path.name}"
    if dest is not None:
        target = config.transfer.destination_root / dest_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dest)
    st = path.stat() if path.exists() else None
    return {
        "key": f"ua-mac/{rel}",
        "version": f"v-{path.name}",
        "path": rel,
        "dest_path": dest_rel,
        "size": st.st_size if st else len(dest or b""),
        "mtime_ns": st.st_mtime_ns if st else 1,
        "batch_id": "b",
        "task_id": "t",
        "backend": "local",
        "checksum": checksum,
        "checksum_algorithm": "sha256",
        "skipped_identical": False,
        "attempt": 1,
        "emitted_ms": 1,
        "dataset_metadata": None,
        "file_metadata": None,
        "raw_path": None,
    }


def decide(config: Config, backend: LocalTransfer, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish the events, run a deleter until each has its FileDeleted; those by path."""
    create_topics(config)
    producer = Producer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "partitioner": PARTITIONER}
    )
    codec = Codec()
    for event in events:
        value = codec.encode("FileTransferred", event)
        producer.produce(config.topic("files.transferred"), value, key=event["key"])
    producer.flush(10)
    topic = config.topic("files.deleted")
    deleter = Deleter(config, registry.spec("deleter"), backend)
    try:
        run_until([deleter], lambda: len(read_all(config.kafka, topic)) >= len(events))
    finally:
        deleter.close()
    return {value["path"]: value for _, value in read_all(config.kafka, topic)}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_only_a_destination_matching_the_recorded_checksum_lets_the_file_go(
    pipeline_config: Config, backend: LocalTransfer, size: str
) -> None:
    data = os.urandom(SIZES[size])
    good = cache_file(pipeline_config, "good_left.bin", data)
    bad = cache_file(pipeline_config, "bad_left.bin", data)
    missing = cache_file(pipeline_config, "missing_left.bin", data)
    digest = hashlib.sha256(data).hexdigest()
    altered = bytes([data[0] ^ 1]) + data[1:]
    events = [
        transferred(pipeline_config, good, digest, data),
        transferred(pipeline_config, bad, digest, altered),
        transferred(pipeline_config, missing, digest, None),
    ]
    decided = decide(pipeline_config, backend, events)
    by_name = {Path(path).name: value for path, value in decided.items()}
    assert by_name["good_left.bin"]["outcome"] == "DELETED"
    assert by_name["good_left.bin"]["destination_confirmed"]
    assert by_name["good_left.bin"]["checksum"] == digest
    for name in ("bad_left.bin", "missing_left.bin"):
        assert by_name[name]["outcome"] == "REFUSED", name
        assert not by_name[name]["destination_confirmed"]
    assert not good.exists() and bad.exists() and missing.exists()


def test_a_file_already_gone_is_recorded_with_its_destination_checked_by_checksum(
    pipeline_config: Config, backend: LocalTransfer
) -> None:
    data = os.urandom(SIZES["large"])
    kept = cache_file(pipeline_config, "kept_left.bin", data)
    lost = cache_file(pipeline_config, "lost_left.bin", data)
    digest = hashlib.sha256(data).hexdigest()
    events = [
        transferred(pipeline_config, kept, digest, data),
        transferred(pipeline_config, lost, digest, data[:-1] + b"?"),
    ]
    kept.unlink()
    lost.unlink()
    by_name = {
        Path(path).name: value for path, value in decide(pipeline_config, backend, events).items()
    }
    assert by_name["kept_left.bin"]["outcome"] == "ALREADY_GONE"
    assert by_name["kept_left.bin"]["destination_confirmed"]
    assert by_name["lost_left.bin"]["outcome"] == "ALREADY_GONE"
    assert not by_name["lost_left.bin"]["destination_confirmed"]


def test_a_batch_over_two_directories_keeps_each_files_outcome_and_reports_each_emptied_dir_once(
    pipeline_config: Config, backend: LocalTransfer
) -> None:
    """Small and large files of two cache directories decided together: each file keeps its own
    outcome, and the directory they emptied is reported by exactly one file's event."""
    emptied = FOLDER.rsplit("/", 1)[0] + "/2017-08-24__12-41-07-004"
    root = pipeline_config.gantry.cache_root
    events, paths = [], {}
    for folder, names in (
        (FOLDER, ("a_small", "a_large", "a_bad")),
        (emptied, ("b_small", "b_large")),
    ):
        for name in names:
            data = os.urandom(SIZES["large" if name.endswith("large") else "small"])
            path = root / folder / f"{name}_left.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            dest = data[:-1] + b"?" if name.endswith("bad") else data
            events.append(
                transferred(pipeline_config, path, hashlib.sha256(data).hexdigest(), dest)
            )
            paths[name] = path
    by_name = {
        Path(path).name.removesuffix("_left.bin"): value
        for path, value in decide(pipeline_config, backend, events).items()
    }
    assert {name: v["outcome"] for name, v in by_name.items()} == {
        "a_small": "DELETED",
        "a_large": "DELETED",
        "a_bad": "REFUSED",
        "b_small": "DELETED",
        "b_large": "DELETED",
    }
    reported = sorted(d for v in by_name.values() for d in v["removed_dirs"])
    assert reported == [emptied]
    assert not (root / emptied).exists() and paths["a_bad"].exists()
    assert not paths["a_small"].exists() and not paths["a_large"].exists()
