"""The catalog entry of a transferred file's event: what the ingest stage hands the catalog.

A gantry file is named from its path in the cache (sensor, date, capture directory); a Danforth
file goes into its snapshot's dataset, named from the snapshot metadata its event carries, which
is attached to the dataset before the file, with an image's own metadata on the image. Pure: no
file is read (a snapshot's ``_metadata.json`` only attaches what its event carries).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consumers.catalog.base import IngestItem
from consumers.catalog.naming import catalog_names, danforth_names
from terra_xfer.errors import PermanentError
from terra_xfer.sites.gantry import CachePath, PathRules, cache_path


def gantry_item(event: Mapping[str, Any], rules: PathRules, destination_root: Path) -> IngestItem:
    """The catalog entry of a gantry file, named from its path in the cache; a path that cannot
    be named is a permanent error."""
    where = cache_path(event["path"], rules)
    if not isinstance(where, CachePath):
        raise PermanentError(f"cannot name {event['path']!r} in the catalog: {where.reason}")
    name = posixpath.basename(event["dest_path"])
    names = catalog_names(where.sensor, where.date, where.timestamp, name)
    return IngestItem(
        key=event["key"],
        dataset_name=names.dataset_name,
        collections=names.collections,
        file_path=str(destination_root / event["dest_path"]),
        file_name=name,
        size=event["size"],
        checksum=event.get("checksum"),
        as_dataset_metadata=names.as_dataset_metadata,
    )


def danforth_item(event: Mapping[str, Any], destination_root: Path) -> IngestItem:
    """The catalog entry of a Danforth file: its snapshot's dataset, named by the snapshot's time,
    with the snapshot's metadata for the dataset and, for an image, its own for the file.

    The snapshot's ``_metadata.json`` only attaches the metadata its event carries (the same as
    its content), so ingest never needs to read it.
    """
    key = event["key"]
    snapshot = _json_object(event.get("dataset_metadata"), key, "dataset_metadata")
    if snapshot is None:
        raise PermanentError(f"{key}: the event carries no snapshot metadata to name its dataset")
    timestamp = snapshot.get("timestamp")
    if not isinstance(timestamp, str):
        raise PermanentError(f"{key}: the snapshot metadata has no timestamp")
    name = posixpath.basename(event["dest_path"])
    names = danforth_names(timestamp, name)
    return IngestItem(
        key=key,
        dataset_name=names.dataset_name,
        collections=names.collections,
        file_path=str(destination_root / event["dest_path"]),
        file_name=name,
        size=event["size"],
        checksum=event.get("checksum"),
        as_dataset_metadata=names.as_dataset_metadata,
        file_metadata=_json_object(event.get("file_metadata"), key, "file_metadata"),
        dataset_metadata=snapshot,
    )


def _json_object(text: str | None, key: str, field: str) -> dict[str, Any] | None:
    """The JSON object an event field holds (None when absent); anything else is permanent."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PermanentError(f"{key}: {field} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PermanentError(f"{key}: {field} is not a JSON object")
    return value
