"""Confirming a local destination copy before its cache file is deleted (or when a task omits it).

The destination must have the item's size and a sha256 equal to the checksum the transfer recorded.
The deleter passes that checksum after checking the cache file against it, so the source is not
read a second time; without one, the destination is compared with the source, which must then still
be the batched version.
"""

from __future__ import annotations

import os
from pathlib import Path

from consumers.transfer.base import FileOutcome, TransferItem
from consumers.transfer.local_copy import destination_path
from consumers.transfer.local_digest import ALGORITHM, PARALLEL_BYTES, digest_fd
from consumers.transfer.local_source import Unusable, both_digests, open_source


def confirm(
    root: Path,
    item: TransferItem,
    checksum: str | None = None,
    algorithm: str | None = None,
    parallel_bytes: int = PARALLEL_BYTES,
) -> FileOutcome:
    """Check the destination copy of ``item`` under ``root``; ``checksum`` counts only when its
    ``algorithm`` is sha256 (another cannot be computed here)."""
    dest = destination_path(root, item.destination)
    if dest is None:
        return FileOutcome.failed(item.key, "destination escapes the destination root")
    try:
        fd = os.open(dest, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return FileOutcome.failed(item.key, f"absent at destination {dest}")
    except OSError as exc:
        return FileOutcome.failed(item.key, f"cannot read {dest}: {exc.strerror or exc}")
    try:
        size = os.fstat(fd).st_size
        if size != item.size:
            return FileOutcome.failed(item.key, f"destination size {size} != {item.size}")
        if checksum is not None and algorithm == ALGORITHM:
            return _against_checksum(item, fd, checksum)
        return _against_source(item, fd, parallel_bytes)
    except OSError as exc:
        return FileOutcome.failed(item.key, f"cannot read {dest}: {exc.strerror or exc}")
    finally:
        os.close(fd)


def _against_checksum(item: TransferItem, fd: int, checksum: str) -> FileOutcome:
    if digest_fd(fd) != checksum:
        return FileOutcome.failed(item.key, "destination content differs from the checksum")
    return FileOutcome(item.key, True, checksum, ALGORITHM, False, "checksum matches")


def _against_source(item: TransferItem, fd: int, parallel_bytes: int) -> FileOutcome:
    try:
        src = open_source(item)
    except Unusable as exc:
        return FileOutcome.failed(item.key, f"cannot compare with the source: {exc}")
    try:
        source_digest, digest = both_digests(item, src, fd, parallel_bytes=parallel_bytes)
    except Unusable as exc:
        return FileOutcome.failed(item.key, f"cannot compare with the source: {exc}")
    finally:
        os.close(src)
    if source_digest != digest:
        return FileOutcome.failed(item.key, "destination content differs from the source")
    return FileOutcome(item.key, True, digest, ALGORITHM, False, "checksum matches source")
