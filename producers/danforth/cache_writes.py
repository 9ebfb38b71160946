"""Writing whole files into the Danforth cache, durably, without spending the image cores on it.

A file is written under a hidden temporary name, synced, then renamed, so a file under its real
name is always whole. The bytes go to the disk with ``O_DIRECT`` where the file system takes it:
straight from an aligned buffer to the device, without a copy into the page cache and its
writeback. On this machine's ext4 that costs about a fifth of the CPU of a buffered write and
``fsync`` (BENCHMARKS.md §6), and a Danforth snapshot is 50 MB of PNG nobody here reads again.
Where ``O_DIRECT`` is refused (tmpfs, some network file systems, an alignment the device does not
take) the file is written through the page cache and fsynced instead, with the same guarantees.

A direct write returns only when the device has the bytes, so :class:`CacheWriter` runs the
writes on threads of their own: the threads making images hand their bytes over and go on. At
most ``queued`` files wait for a writer, which bounds the memory they hold.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.danforth.errors import CacheWriteError

# Offsets, lengths and buffer addresses of a direct write are multiples of this: the largest
# logical block size of common devices (4 KiB sectors), which every smaller one divides.
ALIGN = 4096
_DIRECT = getattr(os, "O_DIRECT", 0)  # not on macOS: there every write is buffered


@dataclass(frozen=True)
class CacheFile:
    """A file written into the cache: where, its version, and its own metadata (images only)."""

    rel: str
    size: int
    mtime_ns: int
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Unsynced:
    """A file being written under its temporary name; :func:`settle` waits for it to be on the
    disk and gives it its name."""

    rel: str
    temporary: Path
    metadata: dict[str, Any] | None
    written: Future[None]


class CacheWriter:
    """Writes files under their temporary names on ``threads`` threads of its own."""

    def __init__(self, root: Path, threads: int = 2, queued: int = 4) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="danforth-write")
        self._slots = threading.BoundedSemaphore(threads + queued)
        self._buffers = threading.local()

    def start(self, rel: str, data: bytes, metadata: dict[str, Any] | None) -> Unsynced:
        """Hand ``data`` to a writer and return at once, or wait while ``queued`` files already
        wait for one. Errors are raised by :func:`settle`."""
        temporary = temporary_path(self.root, rel)
        self._slots.acquire()
        try:
            written = self._pool.submit(self._write, temporary, data)
        except BaseException:
            self._slots.release()
            raise
        written.add_done_callback(lambda _: self._slots.release())
        return Unsynced(rel, temporary, metadata, written)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _write(self, temporary: Path, data: bytes) -> None:
        write_synced(temporary, data, self._buffer(len(data)))

    def _buffer(self, size: int) -> mmap.mmap:
        """This thread's page-aligned buffer, grown to hold ``size`` bytes rounded up."""
        buffer: mmap.mmap | None = getattr(self._buffers, "buffer", None)
        if buffer is None or len(buffer) < size + ALIGN:
            if buffer is not None:
                buffer.close()
            buffer = mmap.mmap(-1, (size + ALIGN + (1 << 20) - 1) & ~((1 << 20) - 1))
            self._buffers.buffer = buffer
        return buffer


def temporary_path(root: Path, rel: str) -> Path:
    target = root / rel
    return target.with_name(f".{target.name}.part")


def write_file(root: Path, rel: str, data: bytes, metadata: dict[str, Any] | None) -> CacheFile:
    """Write ``root/rel`` whole (temporary name, synced, renamed) and return its version."""
    temporary = temporary_path(root, rel)
    write_synced(temporary, data, None)
    return _named(root, rel, temporary, metadata)


def settle(root: Path, unsynced: Unsynced) -> CacheFile:
    """Wait for ``unsynced`` to be on the disk, rename it to its real name, return its version."""
    unsynced.written.result()  # raises its CacheWriteError
    return _named(root, unsynced.rel, unsynced.temporary, unsynced.metadata)


def _named(root: Path, rel: str, temporary: Path, metadata: dict[str, Any] | None) -> CacheFile:
    """Give the synced ``temporary`` its real name ``root/rel``; its version."""
    target = root / rel
    try:
        os.replace(temporary, target)
        st = target.stat()
    except OSError as exc:
        raise CacheWriteError(f"cannot write {target}: {exc}") from exc
    return CacheFile(rel, st.st_size, st.st_mtime_ns, metadata)


def write_synced(path: Path, data: bytes, buffer: mmap.mmap | None) -> None:
    """Write ``data`` to ``path`` (created or truncated) and fsync it: directly from ``buffer``
    (page-aligned, at least ``len(data) + ALIGN`` bytes) when given and the file system takes
    it, through the page cache otherwise."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if buffer is None or not _write_direct(path, data, buffer):
            _write_buffered(path, data)
    except OSError as exc:
        raise CacheWriteError(f"cannot write {path}: {exc}") from exc


def _write_direct(path: Path, data: bytes, buffer: mmap.mmap) -> bool:
    """Write with ``O_DIRECT``; False (nothing left to undo) where it is refused."""
    if not _DIRECT:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _DIRECT, 0o644)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    try:
        size = len(data)
        padded = (size + ALIGN - 1) & ~(ALIGN - 1)
        buffer[:size] = data
        buffer[size:padded] = bytes(padded - size)
        view = memoryview(buffer)
        try:
            done = 0
            while done < padded:
                done += os.write(fd, view[done:padded])
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False  # an alignment this device refuses: written again, buffered
            raise
        finally:
            view.release()
        os.ftruncate(fd, size)  # the padding off: the file is exactly ``data``
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


def _write_buffered(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        done = 0
        while done < len(data):
            done += os.write(fd, view[done:])
        os.fsync(fd)
    finally:
        os.close(fd)
