"""Ingest: registers every transferred file in the catalog (Clowder, or the local SQLite catalog).

Consumes files.transferred. Gantry files are named from their path in the cache; a Danforth
file (``[danforth] site``) goes into its snapshot's dataset, named from the snapshot metadata its
event carries, which is attached to the dataset before the file (so whichever file of a snapshot
comes first, the dataset has its metadata), with an image's own metadata on the image.

The catalog call is the side effect (one per consumed batch), done before the transaction that
records FileIngested and the consumed offsets; it is idempotent (get-or-create by exact name, a file already in its dataset is
skipped), so a replay or a retry after a crash adds nothing. A transient catalog error aborts the
batch, which is retried with backoff; a permanent one is recorded as a final FileIngestFailed with
its reason.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from consumers.catalog.base import Catalog, IngestItem, IngestResult, ingest_each
from consumers.catalog.naming import catalog_names, danforth_names
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError
from terra_xfer.sites.cache import Sites
from terra_xfer.sites.gantry import CachePath, cache_path
from terra_xfer.stages.consume_loop import TransactionalLoop
from terra_xfer.stages.outputs import Decoded, Output, now_ms
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import FILES_INGESTED

log = logging.getLogger(__name__)
# The local catalog files a consumed batch in one transaction, so larger batches cost less per
# file; a remote catalog registers item by item, so its batches stay short (bounded step time).
BATCH_SIZE = {"local": 1000}
REMOTE_BATCH_SIZE = 200


class Ingest:
    """One ingest worker (its own consumer group on files.transferred)."""

    def __init__(self, config: Config, spec: StageSpec, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.sites = Sites(config)
        self.rules = self.sites.gantry_rules
        batch_size = BATCH_SIZE.get(catalog.name, REMOTE_BATCH_SIZE)
        self.loop = TransactionalLoop(config, spec, self._handle, batch_size=batch_size)
        self.ingested = 0

    def step(self) -> int:
        return self.loop.step()

    def item(self, event: dict[str, Any]) -> IngestItem:
        """The catalog entry of a transferred file: names from its path in the cache, or from its
        snapshot's metadata for a Danforth file."""
        if self.sites.is_danforth(event["key"]):
            return danforth_item(event, self.config.transfer.destination_root)
        where = cache_path(event["path"], self.rules)
        if not isinstance(where, CachePath):
            raise PermanentError(f"cannot name {event['path']!r} in the catalog: {where.reason}")
        name = posixpath.basename(event["dest_path"])
        names = catalog_names(where.sensor, where.date, where.timestamp, name)
        return IngestItem(
            key=event["key"],
            dataset_name=names.dataset_name,
            collections=names.collections,
            file_path=str(self.config.transfer.destination_root / event["dest_path"]),
            file_name=name,
            size=event["size"],
            checksum=event.get("checksum"),
            as_dataset_metadata=names.as_dataset_metadata,
        )

    def _handle(self, batch: Sequence[Decoded]) -> list[Output]:
        """One FileIngested or final FileIngestFailed per transferred file of the batch, the
        whole batch filed by one catalog call (failures are the monitor's to retry)."""
        events = [d.value for d in batch if d.record == "FileTransferred"]
        outcomes: list[IngestResult | PermanentError | None] = []
        items: list[IngestItem] = []
        for event in events:
            try:
                items.append(self.item(event))
                outcomes.append(None)
            except PermanentError as exc:
                outcomes.append(exc)
        filed = iter(self._file(items))
        return [
            self._outcome(event, next(filed) if outcome is None else outcome)
            for event, outcome in zip(events, outcomes, strict=True)
        ]

    def _file(self, items: Sequence[IngestItem]) -> list[IngestResult | PermanentError]:
        """The catalog's outcome of each item; one at a time if the batch as a whole is refused,
        so each item still gets its own answer."""
        if not items:
            return []
        try:
            return self.catalog.ingest_many(items)
        except PermanentError as exc:
            log.warning(
                "ingest: the batch of %d was refused (%s); filing one by one", len(items), exc
            )
            return ingest_each(self.catalog, items)

    def _outcome(self, event: dict[str, Any], outcome: IngestResult | PermanentError) -> Output:
        base = {
            "key": event["key"],
            "version": event["version"],
            "catalog": self.catalog.name,
            "emitted_ms": now_ms(),
        }
        codec = self.loop.codec
        topic = self.config.topic(FILES_INGESTED)
        if isinstance(outcome, PermanentError):
            log.error("%s: not ingested: %s", event["key"], outcome)
            value = base | {"reason": str(outcome), "attempt": 1, "final": True}
            return Output(topic, event["key"], codec.encode("FileIngestFailed", value))
        self.ingested += 1
        sensor = self.sites.sensor(event["key"], event["path"])
        metrics.count_file("ingested", sensor, event["size"])
        value = base | {
            "dataset_id": outcome.dataset_id,
            "file_id": outcome.file_id,
            "collection_ids": list(outcome.collection_ids),
            "created": outcome.created,
        }
        return Output(topic, event["key"], codec.encode("FileIngested", value))

    def close(self) -> None:
        try:
            self.loop.close()
        finally:
            self.catalog.close()


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
