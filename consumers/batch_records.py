"""Batch records and transfer items: how a BatchSubmitted event maps onto a backend's items.

Shared by the batcher (which writes batches) and the monitor (which follows them), so both name the
same files the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from consumers.batch_windows import BatchItem, Window
from consumers.transfer.base import TransferItem
from terra_xfer.config import Config


def label_of(batch_id: str) -> str:
    """Globus labels allow letters, digits, spaces, hyphens, underscores, commas and dots."""
    safe = "".join(c if c.isalnum() or c in " -_,." else "-" for c in batch_id)
    return f"terra-xfer {safe}"[:128]


def on_disk(event: dict[str, Any]) -> str:
    """A file's path under its cache root as the filesystem names it: from ``raw_path`` when the
    name is not UTF-8 (``path`` then holds escapes), as ``str`` with surrogate escapes."""
    raw = event.get("raw_path")
    return os.fsdecode(raw) if raw else str(event["path"])


def source_of(config: Config, path: str, site: str | None = None) -> str:
    """Where the backend reads a file: under its site's cache root, or, for a gantry file sent
    by Globus, under the source endpoint's base."""
    if site is not None and site == config.danforth.site:
        return str(config.danforth.cache_root / path)
    if config.transfer.backend == "globus" and config.transfer.globus.source_base:
        return config.transfer.globus.source_base.rstrip("/") + "/" + path
    return str(config.gantry.cache_root / path)


def batch_record(
    window: Window,
    phase: str,
    submission_id: str,
    backend: str,
    task_id: str | None,
    emitted_ms: int,
) -> dict[str, Any]:
    """The BatchSubmitted value of a closed window."""
    return {
        "batch_id": window.batch_id,
        "phase": phase,
        "submission_id": submission_id,
        "task_id": task_id,
        "backend": backend,
        "label": label_of(window.batch_id),
        "files": [file_record(item) for item in window.files],
        "source_topic": window.topic,
        "source_partition": window.partition,
        "first_offset": window.first_offset,
        "last_offset": window.last_offset,
        "emitted_ms": emitted_ms,
    }


def file_record(item: BatchItem) -> dict[str, Any]:
    return {
        "key": item.key,
        "version": item.version,
        "path": item.path,
        "dest_path": item.dest_path,
        "size": item.size,
        "mtime_ns": item.mtime_ns,
        "attempt": item.attempt,
        "dataset_metadata": item.dataset_metadata,
        "file_metadata": item.file_metadata,
        "raw_path": item.raw_path,
    }


def transfer_items(config: Config, files: Sequence[dict[str, Any]]) -> list[TransferItem]:
    """The backend's items for a batch record's files, in the record's order."""
    return [
        TransferItem(
            f["key"],
            source_of(config, on_disk(f), f["key"].split("/", 1)[0]),
            f["dest_path"],
            f["size"],
            f["mtime_ns"],
        )
        for f in files
    ]
