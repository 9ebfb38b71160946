"""Catalog names and metadata shapes of the TERRA-REF hierarchy; pure functions, no I/O.

A capture ``stereoTop/2017-08-24/2017-08-24__12-40-01-916/<uuid>_left.bin`` becomes the dataset
``stereoTop - 2017-08-24__12-40-01-916`` inside the collections ``stereoTop`` → ``stereoTop - 2017``
→ ``stereoTop - 2017-08`` → ``stereoTop - 2017-08-24``. Sensors without a timestamp directory
(EnvironmentLogger, weather) get one dataset per day, ``<sensor> - YYYY-MM-DD``. These are the names
the original pipeline gave, so this catalog continues the one it built.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date as Date
from typing import Any

from consumers.catalog.base import (
    CatalogNameError,
    IngestItem,
    UnreadableMetadata,
    dataset_metadata_content,
)

METADATA_SUFFIX = "_metadata.json"
CLOWDER_METADATA_CONTEXT = "https://clowder.ncsa.illinois.edu/contexts/metadata.jsonld"
UAMAC_VOCAB = "https://terraref.ncsa.illinois.edu/metadata/uamac#"
DANFORTH_VOCAB = "https://terraref.ncsa.illinois.edu/metadata/danforth#"

DANFORTH_SENSOR = "ddpscIndoorSuite"

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LEMNATEC_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{3})")


@dataclass(frozen=True)
class CatalogNames:
    """Where one file goes: its dataset, the collections above it, and whether it is metadata."""

    dataset_name: str
    collections: tuple[str, ...]
    as_dataset_metadata: bool


def catalog_names(
    sensor: str, date: str, timestamp_dir: str | None, file_name: str
) -> CatalogNames:
    """Names for a file of ``sensor`` captured on ``date`` (``YYYY-MM-DD``) in ``timestamp_dir``."""
    if not file_name or "/" in file_name:
        raise CatalogNameError(f"file name {file_name!r} is empty or has a path separator")
    return CatalogNames(
        dataset_name=dataset_name(sensor, date, timestamp_dir),
        collections=collection_chain(sensor, date),
        as_dataset_metadata=is_dataset_metadata(file_name),
    )


def danforth_names(timestamp: str, file_name: str) -> CatalogNames:
    """Names for a file of the Danforth snapshot taken at ``timestamp`` (``YYYY-MM-DD hh:mm:ss.mmm``).

    One dataset per snapshot, ``ddpscIndoorSuite - YYYY-MM-DD__hh-mm-ss-mmm`` (the original
    uploader's name: the time with blanks as ``__`` and ``:`` and ``.`` as ``-``), in the
    collections ``ddpscIndoorSuite`` → year → month → day.
    """
    match = _LEMNATEC_TIME.fullmatch(timestamp)
    if match is None:
        raise CatalogNameError(f"snapshot time {timestamp!r} is not YYYY-MM-DD hh:mm:ss.mmm")
    date = match[1]
    timestamp_dir = f"{date}__{match[2]}-{match[3]}-{match[4]}-{match[5]}"
    return catalog_names(DANFORTH_SENSOR, date, timestamp_dir, file_name)


def dataset_name(sensor: str, date: str, timestamp_dir: str | None) -> str:
    """``<sensor> - <timestamp dir>``, or ``<sensor> - <date>`` when there is no timestamp dir."""
    _check_sensor(sensor)
    _check_date(date)
    if timestamp_dir is None or timestamp_dir == "":
        return f"{sensor} - {date}"
    if "/" in timestamp_dir or timestamp_dir.strip() != timestamp_dir:
        raise CatalogNameError(f"timestamp directory {timestamp_dir!r} is not a single name")
    return f"{sensor} - {timestamp_dir}"


def collection_chain(sensor: str, date: str) -> tuple[str, str, str, str]:
    """The four collections, outermost first: sensor, year, month, day."""
    _check_sensor(sensor)
    _check_date(date)
    year, month, _ = date.split("-")
    return (sensor, f"{sensor} - {year}", f"{sensor} - {year}-{month}", f"{sensor} - {date}")


def is_dataset_metadata(file_name: str) -> bool:
    """True for ``*_metadata.json``: attached to its dataset as JSON-LD, not added as a file."""
    return file_name.endswith(METADATA_SUFFIX) and len(file_name) > len(METADATA_SUFFIX)


def clean_metadata_keys(value: Any) -> Any:
    """A copy of a JSON value with ``.`` in every object key replaced by ``_``, at any depth.

    Clowder stores metadata in MongoDB, which refuses dotted keys; the original pipeline cleaned
    keys the same way (it did not descend into lists; this does, as Mongo refuses them there too).
    """
    if isinstance(value, Mapping):
        return {str(k).replace(".", "_"): clean_metadata_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_metadata_keys(v) for v in value]
    return value


def content_hash(content: Any) -> str:
    """A stable digest of a JSON value (sorted keys, compact): equal content, equal hash."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def jsonld_document(
    content: Mapping[str, Any], agent: Mapping[str, Any], vocab: str = UAMAC_VOCAB
) -> dict[str, Any]:
    """The JSON-LD body Clowder's ``metadata.jsonld`` endpoints take, as the original built it.

    ``agent`` names who added it (``{"@type": "cat:user", "user_id": <user URL>}``); Clowder
    refuses metadata without one. ``content`` is cleaned of dotted keys.
    """
    return {
        "@context": [CLOWDER_METADATA_CONTEXT, {"@vocab": vocab}],
        "content": clean_metadata_keys(content),
        "agent": dict(agent),
    }


def file_metadata_part(content: Mapping[str, Any], vocab: str = UAMAC_VOCAB) -> dict[str, Any]:
    """Metadata sent with a file upload: Clowder keeps the object minus ``@context`` as content."""
    context = [CLOWDER_METADATA_CONTEXT, {"@vocab": vocab}]
    return {"@context": context, **clean_metadata_keys(content)}


def _check_sensor(sensor: str) -> None:
    if not sensor or "/" in sensor or sensor.strip() != sensor:
        raise CatalogNameError(f"sensor {sensor!r} is empty or not a single name")


def _check_date(date: str) -> None:
    if not _DATE.fullmatch(date):
        raise CatalogNameError(f"date {date!r} is not YYYY-MM-DD")
    try:
        Date.fromisoformat(date)
    except ValueError as exc:
        raise CatalogNameError(f"date {date!r} is not a calendar date") from exc


@dataclass(frozen=True)
class Placement:
    """What one item puts into its dataset: the JSON-LD content attached to the dataset (None:
    nothing), whether the item is added as a file of it, and the warning to pass on when a
    ``*_metadata.json`` could not be read and was filed as a file instead."""

    metadata: Any | None
    as_file: bool
    warning: str | None = None


def placement_of(item: IngestItem) -> Placement:
    """Where ``item`` goes in its dataset (reads a ``*_metadata.json`` not read already).

    An ordinary file is a file, after its dataset metadata when it carries some. A readable
    ``*_metadata.json`` is attached to the dataset and is no file. One whose bytes are not a JSON
    object is a file, and its dataset gets :func:`unreadable_metadata_note` instead: it was
    transferred, so it must be found in the catalog like any other.
    """
    if not item.as_dataset_metadata:
        given = item.dataset_metadata
        return Placement(None if given is None else clean_metadata_keys(given), as_file=True)
    content = dataset_metadata_content(item)
    if isinstance(content, UnreadableMetadata):
        return Placement(unreadable_metadata_note(content), True, content.warning)
    return Placement(clean_metadata_keys(content), as_file=False)


def unreadable_metadata_note(unreadable: UnreadableMetadata) -> dict[str, Any]:
    """The note a dataset gets for a ``*_metadata.json`` that could not be read: which file, why,
    what was done instead, and who noted it (in Clowder the document's agent is the API key's
    user, as for all the metadata terra-xfer attaches). The same file always gives the same note,
    so a replay finds it and adds no second one."""
    return {
        "unreadable_metadata": {
            "file": unreadable.file_name,
            "reason": unreadable.reason,
            "action": "registered as a file of this dataset",
            "noted_by": "terra-xfer ingest",
        }
    }
