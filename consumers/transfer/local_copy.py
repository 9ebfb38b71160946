"""Copy files into the destination tree atomically and prove each copy (the local backend's copier).

A copy goes to a temporary file beside its destination, is written and fsynced, read back and
compared with the source's sha256 and size, and only then renamed into place; so a destination
path holds either nothing, the previous content, or a verified copy. A source that no longer has
the batched size and mtime, before or during the copy, is a per-file failure. Files are copied in
groups so their fsyncs share journal commits, and the directories whose entries changed are
returned instead of being fsynced here: the caller fsyncs each directory once before it records
the outcomes that depend on it. Both keep the per-file cost low for many small files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from consumers.transfer.base import FileOutcome, TransferItem

ALGORITHM = "sha256"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CopyResult:
    """The outcome of one item and the directories to fsync before the outcome may be recorded."""

    outcome: FileOutcome
    dirs: tuple[str, ...]


class _Interrupted(Exception):
    """The copy was asked to stop part-way; nothing is recorded and the item is redone later."""


class _Unusable(Exception):
    """The item cannot be copied now; the message is the per-file failure reason."""


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
    """A copy written to its temporary file and not yet fsynced, verified or renamed."""

    item: TransferItem
    dest: Path
    tmp: Path
    fd: int
    digest: str
    dirs: tuple[str, ...]


class FileCopier:
    """Copies items into one destination root; ``tag`` makes temporary names unique per task.

    Safe to share between threads: the only shared state is the set of directories known to exist.
    """

    def __init__(self, root: Path, tag: str, stop: threading.Event | None = None) -> None:
        self._root = root
        self._tag = tag
        self._stop = stop
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
                    os.close(entry.fd)
                    _unlink_quietly(entry.tmp)

    def confirm(self, item: TransferItem) -> FileOutcome:
        """Check the destination copy against the item: its size, and its content against the
        source, which must still be the batched version (otherwise nothing can be confirmed)."""
        dest = destination_path(self._root, item.destination)
        if dest is None:
            return FileOutcome.failed(item.key, "destination escapes the destination root")
        try:
            with open(dest, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                digest = hashlib.file_digest(f, ALGORITHM).hexdigest()
        except FileNotFoundError:
            return FileOutcome.failed(item.key, f"absent at destination {dest}")
        except OSError as exc:
            return FileOutcome.failed(item.key, f"cannot read {dest}: {exc.strerror or exc}")
        if size != item.size:
            return FileOutcome.failed(item.key, f"destination size {size} != {item.size}")
        try:
            src = _open_source(item)
        except _Unusable as exc:
            return FileOutcome.failed(item.key, f"cannot compare with the source: {exc}")
        try:
            source_digest = _digest_fd(src)
        finally:
            os.close(src)
        if source_digest != digest:
            return FileOutcome.failed(item.key, "destination content differs from the source")
        return FileOutcome(item.key, True, digest, ALGORITHM, False, "checksum matches source")

    def _stage(self, item: TransferItem) -> _Staged | CopyResult | None:
        dest = destination_path(self._root, item.destination)
        if dest is None:
            return _failed(item, f"destination {item.destination!r} escapes the destination root")
        try:
            src = _open_source(item)
            try:
                return self._stage_open(item, src, dest)
            finally:
                os.close(src)
        except _Unusable as exc:
            return _failed(item, str(exc))
        except _Interrupted:
            return None
        except OSError as exc:
            return _failed(item, f"copy to {dest} failed: {exc.strerror or exc}")

    def _stage_open(self, item: TransferItem, src: int, dest: Path) -> _Staged | CopyResult:
        if _same_size_file(dest, item.size):
            digest = _digest_fd(src)
            if _digest_path(dest) == digest:
                _check_version(item, os.fstat(src), "source changed during the check")
                return CopyResult(_ok(item, digest, skipped=True), ())
        dirs = self._ensure_dir(dest.parent)
        tmp = dest.parent / f".{_short(dest.name)}.{self._tag}.part"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            digest = self._fill(src, fd)
            _check_version(item, os.fstat(src), "source changed during the copy")
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        return _Staged(item, dest, tmp, fd, digest, (str(dest.parent), *dirs))

    def _fill(self, src: int, dst: int) -> str:
        """Copy the whole source into ``dst``; return the sha256 of what was written."""
        os.lseek(src, 0, os.SEEK_SET)
        digest = hashlib.sha256()
        while chunk := os.read(src, _CHUNK):
            if self._stop is not None and self._stop.is_set():
                raise _Interrupted
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
                    raise _Unusable(f"{path} exists and is not a directory") from None
        self._known_dirs.add(key)
        return tuple(str(p.parent) for p in missing)


def _commit(staged: _Staged) -> CopyResult:
    """fsync the staged copy, read it back and compare, then rename it into place."""
    item, fd = staged.item, staged.fd
    staged.fd = -1
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
        readback = _digest_fd(fd)
        if size != item.size or readback != staged.digest:
            raise _Unusable(
                f"verification failed: read back {size} bytes, sha256 {readback}; "
                f"wrote {item.size} bytes, sha256 {staged.digest}"
            )
        os.rename(staged.tmp, staged.dest)
    except (_Unusable, OSError) as exc:
        _unlink_quietly(staged.tmp)
        reason = str(exc) if isinstance(exc, _Unusable) else exc.strerror or str(exc)
        return _failed(item, f"copy to {staged.dest} failed: {reason}")
    finally:
        os.close(fd)
    return CopyResult(_ok(item, staged.digest, skipped=False), staged.dirs)


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file out now (Linux starts writeback on DONTNEED)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _open_source(item: TransferItem) -> int:
    """Open the source read-only and check it is still the batched version."""
    try:
        fd = os.open(item.source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Unusable(f"source missing: {item.source}") from None
    except OSError as exc:
        raise _Unusable(f"source unreadable: {item.source}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unusable(f"source is not a regular file: {item.source}")
        _check_version(item, st, "source changed since it was batched")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_version(item: TransferItem, st: os.stat_result, what: str) -> None:
    if st.st_size != item.size or st.st_mtime_ns != item.mtime_ns:
        raise _Unusable(
            f"{what}: size {st.st_size} (expected {item.size}), "
            f"mtime_ns {st.st_mtime_ns} (expected {item.mtime_ns})"
        )


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


def _digest_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    digest = hashlib.sha256()
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _digest_path(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, ALGORITHM).hexdigest()


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
