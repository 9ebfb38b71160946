"""The source side of a local copy: the batched version, opened and checked, and its sha256.

A source counts only while it is still the version that was batched (its size and mtime); every
digest of it is followed by that check, so a digest is never attributed to a file that changed
while it was read. For a large file the digest is computed on a second thread, so the caller can
read the other side (the copy, or the destination) at the same time.
"""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import Future

from consumers.transfer.base import TransferItem
from consumers.transfer.local_digest import PARALLEL_BYTES, digest_fd, in_thread, settle


class Unusable(Exception):
    """The item cannot be copied or compared now; the message is the per-file failure reason."""


def open_source(item: TransferItem) -> int:
    """Open the source read-only and check it is still the batched version."""
    try:
        fd = os.open(item.source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unusable(f"source missing: {item.source}") from None
    except OSError as exc:
        raise Unusable(f"source unreadable: {item.source}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unusable(f"source is not a regular file: {item.source}")
        check_version(item, st, "source changed since it was batched")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_version(item: TransferItem, st: os.stat_result, what: str) -> None:
    """Raise Unusable (``what`` and the figures) unless ``st`` has the batched size and mtime."""
    if st.st_size != item.size or st.st_mtime_ns != item.mtime_ns:
        raise Unusable(
            f"{what}: size {st.st_size} (expected {item.size}), "
            f"mtime_ns {st.st_mtime_ns} (expected {item.mtime_ns})"
        )


def source_digest(
    item: TransferItem,
    src: int,
    what: str,
    stop: threading.Event | None = None,
    parallel_bytes: int = PARALLEL_BYTES,
) -> str | Future[str]:
    """The source's sha256 with its version checked after the read (Unusable: ``what``).

    A file of at least ``parallel_bytes`` is read on a second thread through its own descriptor
    (so ``src`` may be closed meanwhile) and a future is returned.
    """
    if item.size < parallel_bytes:
        digest = digest_fd(src, stop)
        check_version(item, os.fstat(src), what)
        return digest
    fd = os.dup(src)

    def work() -> str:
        try:
            digest = digest_fd(fd, stop)
            check_version(item, os.fstat(fd), what)
            return digest
        finally:
            os.close(fd)

    return in_thread(work, "source-digest")


def both_digests(
    item: TransferItem,
    src: int,
    other: int,
    stop: threading.Event | None = None,
    parallel_bytes: int = PARALLEL_BYTES,
) -> tuple[str, str]:
    """The sha256 of the source and of the file ``other``, read at once for a large file.

    Raises Unusable when the source changed while it was read.
    """
    source = source_digest(item, src, "source changed during the check", stop, parallel_bytes)
    try:
        other_digest = digest_fd(other, stop)
    finally:
        settle(source if isinstance(source, Future) else None)
    return (source if isinstance(source, str) else source.result()), other_digest
