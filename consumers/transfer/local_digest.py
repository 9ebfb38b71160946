"""Reading, hashing and copying file contents for the local backend; large files use two cores.

The copier hashes every byte twice (the source, and the copy read back), so for a large file the
two digests are computed at once on two threads: ``hashlib`` releases the GIL while it hashes a
large buffer, and ``os.pread`` releases it while it reads. The copy itself is made inside the kernel
(``copy_file_range``) where the filesystems allow it, so the bytes are not copied through Python.
All reads use explicit offsets, so one file descriptor may be read by two threads.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

ALGORITHM = "sha256"
CHUNK = 1 << 20
# Files at least this large are copied in the kernel and hashed on two threads; below it a
# thread hand-off costs more than it saves.
PARALLEL_BYTES = 1 << 20
# One copy_file_range call at most: a stop request is noticed between calls.
_KERNEL_CHUNK = 64 << 20
# copy_file_range cannot copy between these files (another filesystem, an old kernel, a filesystem
# without support): copy through user space instead.
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
)

T = TypeVar("T")


class Interrupted(Exception):
    """A copy or digest was asked to stop part-way; nothing is recorded and the item is redone."""


def digest_fd(fd: int, stop: threading.Event | None = None) -> str:
    """The sha256 of the whole file behind ``fd``, read from offset 0 (its offset is unused)."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        if stop is not None and stop.is_set():
            raise Interrupted
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def copy_contents(src: int, dst: int, stop: threading.Event | None = None) -> int:
    """Copy all of ``src`` into ``dst`` from offset 0, in the kernel where it can; bytes copied."""
    offset = 0
    in_kernel = hasattr(os, "copy_file_range")
    while True:
        if stop is not None and stop.is_set():
            raise Interrupted
        if in_kernel:
            try:
                n = os.copy_file_range(src, dst, _KERNEL_CHUNK, offset, offset)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                in_kernel = False
                continue
        else:
            n = _copy_chunk(src, dst, offset)
        if n == 0:
            return offset
        offset += n


def _copy_chunk(src: int, dst: int, offset: int) -> int:
    chunk = os.pread(src, CHUNK, offset)
    view = memoryview(chunk)
    at = offset
    while view:
        written = os.pwrite(dst, view, at)
        view, at = view[written:], at + written
    return len(chunk)


def in_thread(work: Callable[[], T], name: str) -> Future[T]:
    """Run ``work`` on a new thread; its result or exception arrives in the returned future."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def settle(future: Future[T] | None) -> None:
    """Wait for ``future`` to finish, ignoring its outcome (its thread releases what it holds)."""
    if future is not None:
        future.exception()
