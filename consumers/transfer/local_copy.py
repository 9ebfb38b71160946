"""Copy files into the destination tree atomically and prove each copy (the local backend's copier).

A copy goes to a temporary file beside its destination, is written and fsynced, read back and
compared with the source's sha256 and size, and only then renamed into place; so a destination
path holds either nothing, the previous content, or a verified copy. A source that no longer has
the batched size and mtime, before or during the copy, is a per-file failure.

A small file's source is hashed as it is copied. A large file is copied in the kernel, and its
source is hashed on a second thread while the copy is read back, so the two digests that prove
the copy take one file's read time on two cores (see :mod:`consumers.transfer.local_digest`).
Files are copied in groups so their fsyncs share journal commits, and the directories whose
entries changed are returned instead of being fsynced here: the caller fsyncs each directory once
before it records the outcomes that depend on it. Both keep the per-file cost low for many small
files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from consumers.transfer.base import FileOutcome, TransferItem
from consumers.transfer.local_digest import (
    ALGORITHM,
    CHUNK,
    PARALLEL_BYTES,
    Interrupted,
    copy_contents,
    digest_fd,
    settle,
)
from consumers.transfer.local_source import (
    Unusable,
    both_digests,
    check_version,
    open_source,
    source_digest,
)


@dataclass(frozen=True)
class CopyResult:
    """The outcome of one item and the directories to fsync before the outcome may be recorded."""

    outcome: FileOutcome
    dirs: tuple[str, ...]


def destination_path(root: Path, relative: str) -> Path | None:
    """``root/relative``, or None when ``relative`` is absolute, empty or climbs out with ``..``."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", ".") for p in parts):
        return None
    return root.joinpath(*parts)


def fsync_dir(path: str) -> None:
    """Make a directory's entries (a rename, a new subdirectory) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Staged:
    """A copy written to its temporary file and not yet fsynced, verified or renamed.

    ``digest`` is the source's sha256, or its future while a second thread still computes it.
    """

    item: TransferItem
    dest: Path
    tmp: Path
    fd: int
    digest: str | Future[str]
    dirs: tuple[str, ...]


class FileCopier:
    """Copies items into one destination root; ``tag`` makes temporary names unique per task.

    Safe to share between threads: the only shared state is the set of directories known to exist.
    Files of at least ``parallel_bytes`` take the large-file path (kernel copy, two hash threads).
    """

    def __init__(
        self,
        root: Path,
        tag: str,
        stop: threading.Event | None = None,
        *,
        parallel_bytes: int = PARALLEL_BYTES,
    ) -> None:
        self._root = root
        self._tag = tag
        self._stop = stop
        self._parallel_bytes = parallel_bytes
        self._known_dirs: set[str] = set()

    def copy(self, item: TransferItem) -> CopyResult | None:
        """Copy one item; None when stopped part-way (the item is simply redone later)."""
        return self.copy_many([item])[0]

    def copy_many(self, items: Sequence[TransferItem]) -> list[CopyResult | None]:
        """Copy a group of items, one result each (None: stopped part-way, redo later).

        All copies of the group are written before any is fsynced, and writeback of all of them
        is started first, so their fsyncs share journal commits instead of forcing one each.
        """
        staged = [self._stage(item) for item in items]
        try:
            for entry in staged:
                if isinstance(entry, _Staged):
                    _start_writeback(entry.fd)
            return [_commit(e) if isinstance(e, _Staged) else e for e in staged]
        finally:
            for entry in staged:
                if isinstance(entry, _Staged) and entry.fd >= 0:
                    _discard(entry)

    def _stage(self, item: TransferItem) -> _Staged | CopyResult | None:
        dest = destination_path(self._root, item.destination)
        if dest is None:
            return _failed(item, f"destination {item.destination!r} escapes the destination root")
        try:
            src = open_source(item)
            try:
                return self._stage_open(item, src, dest)
            finally:
                os.close(src)
        except Unusable as exc:
            return _failed(item, str(exc))
        except Interrupted:
            return None
        except OSError as exc:
            return _failed(item, f"copy to {dest} failed: {exc.strerror or exc}")

    def _stage_open(self, item: TransferItem, src: int, dest: Path) -> _Staged | CopyResult:
        if _same_size_file(dest, item.size):
            skipped = self._identical(item, src, dest)
            if skipped is not None:
                return skipped
        dirs = self._ensure_dir(dest.parent)
        tmp = dest.parent / f".{_short(dest.name)}.{self._tag}.part"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            digest = self._write(item, src, fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        return _Staged(item, dest, tmp, fd, digest, (str(dest.parent), *dirs))

    def _identical(self, item: TransferItem, src: int, dest: Path) -> CopyResult | None:
        """A skipped result when the destination already holds the source's content."""
        with open(dest, "rb") as existing:
            source_digest, dest_digest = both_digests(
                item, src, existing.fileno(), self._stop, self._parallel_bytes
            )
        if source_digest != dest_digest:
            return None
        return CopyResult(_ok(item, source_digest, skipped=True), ())

    def _write(self, item: TransferItem, src: int, dst: int) -> str | Future[str]:
        """Copy the source into ``dst``; return the source's sha256 (or its future)."""
        what = "source changed during the copy"
        if item.size < self._parallel_bytes:
            digest = self._fill(src, dst)
            check_version(item, os.fstat(src), what)
            return digest
        copy_contents(src, dst, self._stop)
        check_version(item, os.fstat(src), what)
        return source_digest(item, src, what, self._stop, self._parallel_bytes)

    def _fill(self, src: int, dst: int) -> str:
        """Copy the whole source into ``dst``; return the sha256 of what was written."""
        os.lseek(src, 0, os.SEEK_SET)
        digest = hashlib.sha256()
        while chunk := os.read(src, CHUNK):
            if self._stop is not None and self._stop.is_set():
                raise Interrupted
            digest.update(chunk)
            _write_all(dst, chunk)
        return digest.hexdigest()

    def _ensure_dir(self, directory: Path) -> tuple[str, ...]:
        """Create ``directory`` and its missing parents; return the parents of those created."""
        key = str(directory)
        if key in self._known_dirs:
            return ()
        missing: list[Path] = []
        probe = directory
        while not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise Unusable(f"{path} exists and is not a directory") from None
        self._known_dirs.add(key)
        return tuple(str(p.parent) for p in missing)


def _commit(staged: _Staged) -> CopyResult | None:
    """fsync the staged copy, read it back and compare with the source's digest, then rename it
    into place. None when stopped part-way."""
    item, fd = staged.item, staged.fd
    staged.fd = -1
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
        readback = digest_fd(fd)
        digest = staged.digest if isinstance(staged.digest, str) else staged.digest.result()
        if size != item.size or readback != digest:
            raise Unusable(
                f"verification failed: read back {size} bytes, sha256 {readback}; "
                f"source {item.size} bytes, sha256 {digest}"
            )
        os.rename(staged.tmp, staged.dest)
    except Interrupted:
        _unlink_quietly(staged.tmp)
        return None
    except (Unusable, OSError) as exc:
        _unlink_quietly(staged.tmp)
        reason = str(exc) if isinstance(exc, Unusable) else exc.strerror or str(exc)
        return _failed(item, f"copy to {staged.dest} failed: {reason}")
    finally:
        os.close(fd)
        settle(staged.digest if isinstance(staged.digest, Future) else None)
    return CopyResult(_ok(item, digest, skipped=False), staged.dirs)


def _discard(staged: _Staged) -> None:
    """Drop a staged copy that will not be committed."""
    os.close(staged.fd)
    staged.fd = -1
    _unlink_quietly(staged.tmp)
    settle(staged.digest if isinstance(staged.digest, Future) else None)


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file out now (Linux starts writeback on DONTNEED)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _same_size_file(path: Path, size: int) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return False
        raise
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _ok(item: TransferItem, digest: str, *, skipped: bool) -> FileOutcome:
    return FileOutcome(item.key, True, digest, ALGORITHM, skipped, None)


def _failed(item: TransferItem, reason: str) -> CopyResult:
    return CopyResult(FileOutcome.failed(item.key, reason), ())


def _short(name: str, limit: int = 128) -> str:
    """``name``, or a digest of it when long: the temporary name must fit the filesystem's limit."""
    raw = os.fsencode(name)
    return name if len(raw) <= limit else hashlib.sha256(raw).hexdigest()[:32]
