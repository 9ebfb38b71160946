"""Deciding whether a cache file may be removed, and removing it safely (no Kafka).

A file is removed only when all of these hold, else the deletion is refused with the reason:
- its path is relative, without ``..``, and every component under the cache root is reached without
  following a symlink (a symlink could point anywhere, including the destination);
- it is a regular file and still the transferred version (size and mtime; the checksum too when the
  transfer took one with an algorithm we can compute);
- the destination copy is confirmed by the transfer backend.
A path that no longer exists counts as already deleted. Directories emptied by the removal are
removed too, up to (not including) the sensor directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

CHECKSUMS = {"sha256": hashlib.sha256, "md5": hashlib.md5, "sha1": hashlib.sha1}


@dataclass(frozen=True)
class Decision:
    """What the deleter did: DELETED, ALREADY_GONE, REFUSED or DRY_RUN, with the evidence."""

    outcome: str
    reason: str | None = None
    checksum: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    destination_confirmed: bool = False
    removed_dirs: list[str] = field(default_factory=list)


def refuse(reason: str, **evidence: object) -> Decision:
    return Decision("REFUSED", reason, **evidence)  # type: ignore[arg-type]


def open_no_symlinks(root: str, rel: str) -> tuple[int, str] | Decision:
    """A directory fd of the file's parent, reached from ``root`` without following any symlink."""
    parts = rel.split("/")
    if rel.startswith("/") or not rel or any(p in ("", ".", "..") for p in parts):
        return refuse(f"path {rel!r} is not a plain relative path under the cache root")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return refuse(f"cache root {root!r} cannot be opened: {exc.strerror}")
    for part in parts[:-1]:
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.ENOENT:
                return Decision("ALREADY_GONE")
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return refuse(f"{part!r} in {rel!r} is a symlink or not a directory")
            return refuse(f"cannot open {part!r} in {rel!r}: {exc.strerror}")
        os.close(fd)
        fd = nxt
    return fd, parts[-1]


def checksum_of(dir_fd: int, name: str, algorithm: str) -> str:
    digest = CHECKSUMS[algorithm]()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def delete(
    root: str,
    rel: str,
    size: int,
    mtime_ns: int,
    checksum: str | None,
    algorithm: str | None,
    confirm: Callable[[], bool],
    stop_depth: int,
    dry_run: bool = False,
) -> Decision:
    """Remove ``root/rel`` if every rule holds; ``stop_depth`` = components never removed as dirs."""
    opened = open_no_symlinks(root, rel)
    if isinstance(opened, Decision):
        return opened
    dir_fd, name = opened
    try:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return Decision("ALREADY_GONE")
        except OSError as exc:  # a name too long for the filesystem, a permission, an I/O error
            return refuse(f"cannot stat {rel!r}: {exc.strerror}")
        evidence = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if not stat.S_ISREG(st.st_mode):
            return refuse(f"{rel!r} is not a regular file", **evidence)
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            return refuse(f"{rel!r} changed after its transfer (size/mtime differ)", **evidence)
        local_sum = None
        if checksum and algorithm in CHECKSUMS:
            local_sum = checksum_of(dir_fd, name, algorithm)
            if local_sum != checksum:
                return refuse(f"{rel!r} content differs from the transferred checksum", **evidence)
        if not confirm():
            return refuse(
                "the destination copy is missing or differs", checksum=local_sum, **evidence
            )
        if dry_run:
            return Decision("DRY_RUN", None, local_sum, st.st_size, st.st_mtime_ns, True)
        os.unlink(name, dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    removed = remove_empty_parents(root, rel, stop_depth)
    return Decision("DELETED", None, local_sum, size, mtime_ns, True, removed)


def remove_empty_parents(root: str, rel: str, stop_depth: int) -> list[str]:
    """Remove now-empty parent directories of ``rel``, deepest first, keeping ``stop_depth`` levels."""
    parts = rel.split("/")[:-1]
    removed = []
    while len(parts) > stop_depth:
        path = os.path.join(root, *parts)
        try:
            if os.path.islink(path):
                break
            os.rmdir(path)
        except OSError:
            break  # not empty (or already gone): leave it and everything above
        removed.append("/".join(parts))
        parts.pop()
    return removed
