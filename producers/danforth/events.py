"""The events one made snapshot becomes: FileArrived values, metadata file first, and dead letters.

Event ids are ``danforth:<database>:<snapshot id>:<file name>``: deterministic, so the same
snapshot always yields the same ids. Every file's event carries the snapshot's metadata
(``dataset_metadata``) and every image's its own (``file_metadata``), as JSON: files of one
snapshot land on different partitions, so ingest must be able to attach the snapshot's metadata to
its dataset whichever file comes first.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from producers.danforth.cache_writes import CacheFile
from producers.danforth.materialise import Failure, Made
from producers.danforth.metadata import timestamp_dir
from producers.danforth.progress import GivenUp
from terra_xfer.sites.danforth import SENSOR, cache_rel, dest_rel

SOURCE = "danforth"


def arrivals(
    made: Made, site: str, database: str, zone: str, emitted_ms: int
) -> list[dict[str, Any]]:
    """The FileArrived values of a made snapshot: its metadata file, then each image."""
    dataset_metadata = _json(made.metadata)
    files = [made.metadata_file, *made.images]
    return [_arrival(made, f, site, database, zone, dataset_metadata, emitted_ms) for f in files]


def _arrival(
    made: Made,
    file: CacheFile,
    site: str,
    database: str,
    zone: str,
    dataset_metadata: str,
    emitted_ms: int,
) -> dict[str, Any]:
    snapshot = made.snapshot
    taken = snapshot.taken
    name = file.rel.rsplit("/", 1)[-1]
    return {
        "event_id": f"{SOURCE}:{database}:{snapshot.id}:{name}",
        "key": f"{site}/{file.rel}",
        "version": f"{file.size}:{file.mtime_ns}",
        "site": site,
        "path": file.rel,
        "raw_path": None,
        "sensor": SENSOR,
        "date": taken.strftime("%Y-%m-%d"),
        "timestamp": timestamp_dir(taken),
        "dest_path": dest_rel(site, file.rel),
        "size": file.size,
        "mtime_ns": file.mtime_ns,
        "source": "DANFORTH",
        "source_ref": f"{database} snapshot {snapshot.id}",
        "logged_ms": epoch_ms(taken, zone),
        "remote_host": None,
        "username": None,
        "emitted_ms": emitted_ms,
        "attempt": 1,
        "dataset_metadata": dataset_metadata,
        "file_metadata": None if file.metadata is None else _json(file.metadata),
    }


def image_dead_letter(failure: Failure, site: str, emitted_ms: int) -> dict[str, Any]:
    """The DeadLetter of an image that could not be made; ``raw`` is its tile row as JSON."""
    tile = failure.tile
    raw = {
        "snapshot_id": tile.snapshot_id,
        "tiled_image_id": tile.tiled_image_id,
        "camera_label": tile.camera_label,
        "frame": tile.frame,
        "raw_image_oid": tile.raw_image_oid,
        "rotate_flip_type": tile.rotate_flip_type,
        "dataformat": tile.dataformat,
    }
    return {
        "source": SOURCE,
        "reason": failure.error.reason,
        "raw": _json(raw).encode(),
        "origin": str(failure.blob),
        "offset": None,
        "partition": None,
        "key": f"{site}/{cache_rel(tile.snapshot_id, failure.name)}",
        "emitted_ms": emitted_ms,
    }


def snapshot_dead_letter(given_up: GivenUp, database: str, emitted_ms: int) -> dict[str, Any]:
    """The DeadLetter of a snapshot given up on; ``raw`` is its row as JSON."""
    s = given_up.snapshot
    raw = {
        "id": s.id,
        "id_tag": s.id_tag,
        "car_tag": s.car_tag,
        "time_stamp": None if s.time_stamp is None else s.time_stamp.isoformat(),
        "measurement_label": s.measurement_label,
        "propagated": s.completed,
    }
    return {
        "source": SOURCE,
        "reason": given_up.reason,
        "raw": _json(raw).encode(),
        "origin": f"LemnaTec database {database}, snapshot {s.id}",
        "offset": None,
        "partition": None,
        "key": None,
        "emitted_ms": emitted_ms,
    }


def epoch_ms(taken: datetime, zone: str) -> int:
    """Milliseconds since the epoch of a LemnaTec time (local time of ``zone`` when naive)."""
    aware = taken if taken.tzinfo is not None else taken.replace(tzinfo=ZoneInfo(zone))
    return int(aware.timestamp() * 1000)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
