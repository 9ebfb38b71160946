"""Deciding whether cache files may be removed, and removing them safely (no Kafka).

A file is removed only when all of these hold, else the deletion is refused with the reason:
- its path is relative, without ``..``, and every component under the cache root is reached without
  following a symlink (a symlink could point anywhere, including the destination);
- it is a regular file and still the transferred version (size and mtime; the checksum too when the
  transfer took one with an algorithm we can compute);
- the destination copy is confirmed by the transfer backend.
A path that no longer exists counts as already deleted. Directories emptied by the removal are
removed too, up to (not including) the sensor directory.

Files come a batch at a time and are handled per parent directory: the directory is reached once
by the no-symlink walk, and every file of it is checked and unlinked through that one directory fd.
Holding the fd pins the directory, so a symlink swapped in for a component afterwards cannot
redirect us. Each directory is fsynced once after its unlinks, and decisions are returned only
after every directory of the batch is: no DELETED decision exists for an unlink not yet durable.
Nothing is kept from one batch to the next.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

CHECKSUMS = {"sha256": hashlib.sha256, "md5": hashlib.md5, "sha1": hashlib.sha1}


@dataclass(frozen=True)
class Decision:
    """What the deleter did with one file: DELETED, ALREADY_GONE, REFUSED or DRY_RUN, with the
    evidence.

    ``removed_dirs`` are the directories left empty, and removed, once the batch's files of this
    file's parent directory were unlinked. They go to the last file of that directory (in batch
    order) that was DELETED, the removal that emptied them; every other file has none.
    """

    outcome: str
    reason: str | None = None
    checksum: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    destination_confirmed: bool = False
    removed_dirs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    """A file to remove: where it is, the version transferred, how to confirm the destination.

    ``confirm`` is entered while the file is checked (a slow destination check may start then and
    run meanwhile; leaving waits for it); the callable it gives says whether the destination copy
    is confirmed. ``stop_depth``: leading components of ``rel`` never removed as directories.
    """

    root: str
    rel: str
    size: int
    mtime_ns: int
    checksum: str | None
    algorithm: str | None
    confirm: AbstractContextManager[Callable[[], bool]]
    stop_depth: int


@dataclass(frozen=True)
class Unreachable:
    """Why a parent directory could not be reached; it holds for every file under it."""

    part: str | None  # the component that failed; None: the cache root itself
    code: int | None  # the errno
    strerror: str | None

    def decision(self, root: str, rel: str) -> Decision:
        if self.part is None:
            return refuse(f"cache root {root!r} cannot be opened: {self.strerror}")
        if self.code == errno.ENOENT:
            return Decision("ALREADY_GONE")
        if self.code in (errno.ELOOP, errno.ENOTDIR):
            return refuse(f"{self.part!r} in {rel!r} is a symlink or not a directory")
        return refuse(f"cannot open {self.part!r} in {rel!r}: {self.strerror}")


def refuse(reason: str, **evidence: object) -> Decision:
    return Decision("REFUSED", reason, **evidence)  # type: ignore[arg-type]


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
    """Remove ``root/rel`` if every rule holds: a batch of one file."""
    request = Request(
        root, rel, size, mtime_ns, checksum, algorithm, nullcontext(confirm), stop_depth
    )
    return delete_batch([request], dry_run)[0]


def delete_batch(requests: Sequence[Request], dry_run: bool = False) -> list[Decision]:
    """The decision for each request, in the order given, each parent directory handled once."""
    decided: dict[int, Decision] = {}
    groups: dict[tuple[str, tuple[str, ...], int], list[int]] = {}
    for i, request in enumerate(requests):
        parts = split_rel(request.rel)
        if isinstance(parts, Decision):
            decided[i] = parts
        else:
            groups.setdefault((request.root, parts[:-1], request.stop_depth), []).append(i)
    for (root, dirs, stop_depth), members in groups.items():
        group = [requests[i] for i in members]
        decisions = delete_group(root, dirs, stop_depth, group, dry_run)
        decided.update(zip(members, decisions, strict=True))
    return [decided[i] for i in range(len(requests))]


def split_rel(rel: str) -> tuple[str, ...] | Decision:
    """The components of a plain relative path, or the refusal of any other path."""
    parts = tuple(rel.split("/"))
    if rel.startswith("/") or not rel or any(p in ("", ".", "..") for p in parts):
        return refuse(f"path {rel!r} is not a plain relative path under the cache root")
    return parts


def delete_group(
    root: str, dirs: tuple[str, ...], stop_depth: int, group: Sequence[Request], dry_run: bool
) -> list[Decision]:
    """The decisions for the files of one parent directory, all through one pinned directory fd."""
    dir_fd = open_dir(root, dirs)
    if isinstance(dir_fd, Unreachable):
        return [dir_fd.decision(root, request.rel) for request in group]
    decisions = []
    try:
        for request in group:
            with request.confirm as confirmed:
                decisions.append(decide_file(dir_fd, request, confirmed, dry_run))
        if any(d.outcome == "DELETED" for d in decisions):
            os.fsync(dir_fd)  # the group's unlinks are durable before any decision is returned
    finally:
        os.close(dir_fd)
    deleted = [i for i, d in enumerate(decisions) if d.outcome == "DELETED"]
    if deleted:
        removed = remove_empty_parents(root, dirs, stop_depth)
        decisions[deleted[-1]] = replace(decisions[deleted[-1]], removed_dirs=removed)
    return decisions


def open_dir(root: str, dirs: Sequence[str]) -> int | Unreachable:
    """A directory fd of ``root/dirs``, reached from ``root`` without following any symlink."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return Unreachable(None, exc.errno, exc.strerror)
    for part in dirs:
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            return Unreachable(part, exc.errno, exc.strerror)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def decide_file(
    dir_fd: int, request: Request, confirmed: Callable[[], bool], dry_run: bool
) -> Decision:
    """Check one file of the directory ``dir_fd`` against every rule, and unlink it if they hold.

    The unlink is not yet durable: the caller fsyncs the directory before the decision goes out.
    """
    rel, name = request.rel, request.rel.rsplit("/", 1)[-1]
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return Decision("ALREADY_GONE")
    except OSError as exc:  # a name too long for the filesystem, a permission, an I/O error
        return refuse(f"cannot stat {rel!r}: {exc.strerror}")
    evidence = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if not stat.S_ISREG(st.st_mode):
        return refuse(f"{rel!r} is not a regular file", **evidence)
    if (st.st_size, st.st_mtime_ns) != (request.size, request.mtime_ns):
        return refuse(f"{rel!r} changed after its transfer (size/mtime differ)", **evidence)
    local_sum = None
    if request.checksum and request.algorithm in CHECKSUMS:
        local_sum = checksum_of(dir_fd, name, request.algorithm)
        if local_sum != request.checksum:
            return refuse(f"{rel!r} content differs from the transferred checksum", **evidence)
    if not confirmed():
        return refuse("the destination copy is missing or differs", checksum=local_sum, **evidence)
    if dry_run:
        return Decision("DRY_RUN", None, local_sum, st.st_size, st.st_mtime_ns, True)
    os.unlink(name, dir_fd=dir_fd)
    return Decision("DELETED", None, local_sum, request.size, request.mtime_ns, True)


def checksum_of(dir_fd: int, name: str, algorithm: str) -> str:
    digest = CHECKSUMS[algorithm]()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def remove_empty_parents(root: str, dirs: Sequence[str], stop_depth: int) -> list[str]:
    """Remove ``root/dirs`` and its parents while empty, deepest first, keeping ``stop_depth``
    levels."""
    parts = list(dirs)
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
