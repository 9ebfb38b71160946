"""One valid value of every record type, for round-trip tests."""

from __future__ import annotations

from typing import Any

KEY = "ua-mac/LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/ef0b_left.bin"
VERSION = "8147712:1503578401916000000"
MS = 1_503_578_401_916


def sample(name: str) -> dict[str, Any]:
    common = {"key": KEY, "version": VERSION}
    values: dict[str, dict[str, Any]] = {
        "FileArrived": {
            **common, "event_id": "xferlog:1a2b:4096", "site": "ua-mac", "path": KEY[7:],
            "raw_path": b"caf\xe9", "sensor": "stereoTop", "date": "2017-08-24",
            "timestamp": "2017-08-24__12-40-01-916", "dest_path": "sites/ua-mac/raw_data/x",
            "size": 8147712, "mtime_ns": 1503578401916000000, "source": "XFERLOG",
            "source_ref": "/var/log/xferlog@4096", "logged_ms": MS, "remote_host": "::ffff:1.2.3.4",
            "username": "lemnatec", "emitted_ms": MS,
        },
        "BatchSubmitted": {
            "batch_id": "b-0-0-499", "phase": "SUBMITTED", "submission_id": "sub-1", "task_id": "t-1",
            "backend": "local", "label": "terra-xfer b-0-0-499",
            "files": [{**common, "path": KEY[7:], "dest_path": "d", "size": 1, "mtime_ns": 2,
                       "attempt": 1}],
            "source_topic": "terra.files.arrived", "source_partition": 0, "first_offset": 0,
            "last_offset": 499, "emitted_ms": MS,
        },
        "FileTransferred": {
            **common, "path": KEY[7:], "dest_path": "d", "size": 1, "mtime_ns": 2, "batch_id": "b",
            "task_id": "t", "backend": "local", "checksum": "ab", "checksum_algorithm": "sha256",
            "skipped_identical": False, "attempt": 1, "emitted_ms": MS,
        },
        "FileTransferFailed": {
            **common, "path": KEY[7:], "dest_path": "d", "size": 1, "mtime_ns": 2, "batch_id": "b",
            "task_id": None, "backend": "globus", "reason": "permission denied", "attempt": 2,
            "final": False, "retry_at_ms": MS + 30_000, "emitted_ms": MS,
        },
        "FileIngested": {
            **common, "catalog": "local", "dataset_id": "d1", "file_id": "f1",
            "collection_ids": ["c1", "c2"], "created": True, "emitted_ms": MS,
        },
        "FileIngestFailed": {
            **common, "catalog": "clowder", "reason": "403 forbidden", "attempt": 1, "final": True,
            "emitted_ms": MS,
        },
        "FileDeleted": {
            **common, "path": KEY[7:], "outcome": "DELETED", "reason": None, "size": 1, "mtime_ns": 2,
            "checksum": "ab", "destination_confirmed": True, "removed_dirs": ["a/b"],
            "emitted_ms": MS,
        },
        "FileState": {
            **common, "site": "ua-mac", "path": KEY[7:], "sensor": "stereoTop", "date": "2017-08-24",
            "size": 1, "mtime_ns": 2, "state": "TRANSFERRED", "ingested": False, "deleted": False,
            "attempts": 1, "reason": None, "task_id": "t", "checksum": "ab", "dataset_id": None,
            "file_id": None, "arrived_ms": MS, "updated_ms": MS + 1,
            "history": [{"state": "ARRIVED", "at_ms": MS, "evidence": {"source": "xferlog"}}],
            "previous_versions": [],
        },
        "Checkpoint": {
            "source": "gantry:xferlog:/var/log/xferlog", "position": '{"offset": 4096}',
            "events": 12, "emitted_ms": MS,
        },
        "DeadLetter": {
            "source": "gantry:xferlog", "reason": "bad month 'Foo'", "raw": b"Foo Apr  5 \xff\n",
            "origin": "/var/log/xferlog", "offset": 4096, "partition": None, "key": None,
            "emitted_ms": MS,
        },
    }
    return values[name]
