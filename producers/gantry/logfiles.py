"""Log files as the tailer sees them: identity, checkpoints, plain or gzipped files, siblings.

A log file is known by device and inode plus the fingerprint of its first bytes, so it is found
again after being renamed or gzipped; see ``producers.gantry.tailer`` for how they are followed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from terra_xfer.errors import PermanentError, TransientError

DEFAULT_MAX_LINE = 64 * 1024
FINGERPRINT_BYTES = 256
CHUNK_BYTES = 1 << 20
_GZ = ".gz"


class CheckpointLostError(PermanentError):
    """No file holds the checkpoint's fingerprint at or beyond its offset; re-seat the tailer."""


class CheckpointFormatError(PermanentError):
    """A stored checkpoint is not a valid checkpoint value."""


class LogReadError(TransientError):
    """The log could not be read (I/O error); reading again later may succeed."""


class CorruptLogError(PermanentError):
    """A compressed rotated log cannot be decompressed."""


def fingerprint(head: bytes) -> str:
    """The fingerprint of a file's first bytes: their SHA-256, hex."""
    return hashlib.sha256(head).hexdigest()


@dataclass(frozen=True, slots=True)
class LogIdentity:
    """Which file: its name when seen, device, inode, and fingerprint of its first bytes."""

    name: str
    dev: int
    ino: int
    fingerprint: str
    fingerprint_len: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A position in the log: the file (by identity) and the byte offset of the next line.

    A checkpoint with ``fingerprint_len == 0`` points at the start of a live file that was empty:
    reading resumes at the oldest rotated sibling whose name sorts after ``after`` (the newest
    sibling when that file was live; "" for none), since that file has been rotated since, or else
    at the start of the live log. ``Checkpoint.start`` (inode 0) is the start of the live log.
    """

    name: str
    dev: int
    ino: int
    fingerprint: str
    fingerprint_len: int
    offset: int
    after: str = ""

    @classmethod
    def at(cls, source: LogIdentity, offset: int, after: str | None = None) -> Checkpoint:
        """The position ``offset`` in the file ``source``."""
        s = source
        return cls(s.name, s.dev, s.ino, s.fingerprint, s.fingerprint_len, offset, after or "")

    @classmethod
    def start(cls, name: str) -> Checkpoint:
        """The start of the live log ``name``, whatever it holds when first read."""
        return cls(name, 0, 0, fingerprint(b""), 0, 0)

    def to_dict(self) -> dict[str, str | int]:
        """The checkpoint as a plain dict of str and int, for storing."""
        return {
            "name": self.name,
            "dev": self.dev,
            "ino": self.ino,
            "fingerprint": self.fingerprint,
            "fingerprint_len": self.fingerprint_len,
            "offset": self.offset,
            "after": self.after,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, str | int]) -> Checkpoint:
        """Read a stored checkpoint; raises ``CheckpointFormatError`` if it is not one."""
        try:
            strs = [data["name"], data["fingerprint"], data.get("after", "")]
            ints = [data[k] for k in ("dev", "ino", "fingerprint_len", "offset")]
        except KeyError as exc:
            raise CheckpointFormatError(f"stored checkpoint lacks the field {exc}") from exc
        if not all(isinstance(v, str) for v in strs) or len(str(strs[1])) != 64:
            raise CheckpointFormatError("stored checkpoint has a bad name or fingerprint")
        if not all(type(v) is int and v >= 0 for v in ints):
            raise CheckpointFormatError("stored checkpoint has a negative or non-integer number")
        name, digest, after = (str(v) for v in strs)
        dev, ino, fp_len, offset = (int(v) for v in ints)
        if fp_len > FINGERPRINT_BYTES or (fp_len == 0 and offset != 0):
            raise CheckpointFormatError("stored checkpoint has an impossible fingerprint length")
        return cls(name, dev, ino, digest, fp_len, offset, after)


class LogFile:
    """One open log file, plain or gzip, read forward from a position; keeps its inode alive."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.gz = path.endswith(_GZ)
        # Non-blocking so that a FIFO in the log's place cannot hang the open; no effect on files.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._raw = open(fd, "rb", buffering=0)  # noqa: SIM115 - held open across calls
        self._gz: gzip.GzipFile | None = None
        self._head = b""
        try:
            st = os.fstat(self._raw.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"{path} is not a regular file")
            self.dev, self.ino = st.st_dev, st.st_ino
            if self.gz:
                self._gz = gzip.GzipFile(fileobj=self._raw)
                self._head = self._gz_read(FINGERPRINT_BYTES)
                self.seek(0)
        except BaseException:
            self.close()
            raise

    def _gz_read(self, n: int) -> bytes:
        assert self._gz is not None
        try:
            return self._gz.read(n)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise CorruptLogError(f"compressed log {self.path} cannot be read: {exc}") from exc

    def seek(self, pos: int) -> int:
        """Move a gzip file's read position (plain files are read at explicit positions)."""
        if self._gz is None:
            return pos
        try:
            return self._gz.seek(pos)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise CorruptLogError(f"compressed log {self.path} cannot be read: {exc}") from exc

    def read(self, pos: int, n: int = CHUNK_BYTES) -> bytes:
        """Up to ``n`` bytes at ``pos`` (a gzip file is read on from its last position)."""
        if self._gz is not None:
            return self._gz_read(n)
        return os.pread(self._raw.fileno(), n, pos)

    def head(self, n: int = FINGERPRINT_BYTES) -> bytes:
        """The first ``n`` (at most ``FINGERPRINT_BYTES``) bytes, decompressed."""
        return self._head[:n] if self.gz else os.pread(self._raw.fileno(), n, 0)

    def size(self) -> int:
        """The current size of a plain file; a gzip file reports -1 (it no longer grows)."""
        return -1 if self.gz else os.fstat(self._raw.fileno()).st_size

    def identity(self) -> LogIdentity:
        """Name, inode and fingerprint; a short file is fingerprinted up to its last newline only.

        A fingerprint of a few bytes of a partial first line would match unrelated files that start
        the same way; whole lines do not (an xferlog line starts with its time and ends with a path).
        """
        head = self.head()
        if len(head) < FINGERPRINT_BYTES:
            head = head[: head.rfind(b"\n") + 1]
        return LogIdentity(self.name, self.dev, self.ino, fingerprint(head), len(head))

    def holds(self, cp: Checkpoint) -> bool:
        """True if this file has the checkpoint's fingerprint and reaches its offset."""
        if cp.fingerprint_len == 0:
            return False  # no content to recognise; see Tailer._place
        if fingerprint(self.head(cp.fingerprint_len)) != cp.fingerprint:
            return False
        if not self.gz:
            return self.size() >= cp.offset
        reached = self.seek(cp.offset)
        self.seek(0)
        return reached == cp.offset

    def same_content(self, ident: LogIdentity) -> bool:
        """True if this is the file ``ident`` names, renamed, copied or compressed."""
        if (self.dev, self.ino) == (ident.dev, ident.ino) and not self.gz:
            return True
        if ident.fingerprint_len == 0:
            return False
        return fingerprint(self.head(ident.fingerprint_len)) == ident.fingerprint

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


def open_log(path: str, tolerate_corrupt: bool = False) -> LogFile | None:
    """Open a log file, or None if it vanished, is not a regular file, or (if tolerated) corrupt."""
    try:
        return LogFile(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except CorruptLogError:
        if tolerate_corrupt:
            return None
        raise


def rotated_siblings(path: str) -> list[str]:
    """The rotated siblings of the log ``path``, oldest first, a plain file before its ``.gz``."""
    folder, base = os.path.split(path)
    try:
        names = os.listdir(folder or ".")
    except FileNotFoundError:
        return []
    rotated = [n for n in names if n.startswith(base + "-")]
    rotated.sort(key=lambda n: (log_stem(n), n.endswith(_GZ)))
    return [os.path.join(folder, n) for n in rotated]


def log_stem(path: str) -> str:
    """A sibling's name without ``.gz``: what orders it among the others."""
    return os.path.basename(path).removesuffix(_GZ)


def floor_sibling(siblings: list[str]) -> str | None:
    """The newest sibling's stem: every sibling up to it is older than the live file."""
    return log_stem(siblings[-1]) if siblings else None


def holds_checkpoint(f: LogFile, cp: Checkpoint) -> bool:
    try:
        return f.holds(cp)
    except CorruptLogError:
        return False


def locate(path: str, cp: Checkpoint, exclude: tuple[int, int] | None = None) -> LogFile | None:
    """Open the file holding ``cp``: the same plain inode if it does, else the oldest that does."""
    found: LogFile | None = None
    for candidate in [*rotated_siblings(path), path]:
        f = open_log(candidate, tolerate_corrupt=True)
        if f is None:
            continue
        if (f.dev, f.ino) == exclude or not holds_checkpoint(f, cp):
            f.close()
        elif (f.dev, f.ino) == (cp.dev, cp.ino) and not f.gz:
            if found is not None:
                found.close()
            return f
        elif found is None:
            found = f
        else:
            f.close()
    return found


def lost_error(path: str, cp: Checkpoint) -> CheckpointLostError:
    looked = ", ".join(os.path.basename(p) for p in [*rotated_siblings(path), path])
    return CheckpointLostError(
        f"no log file holds fingerprint {cp.fingerprint[:16]} ({cp.fingerprint_len} bytes) "
        f"up to offset {cp.offset}; looked at {looked} in {os.path.dirname(path) or '.'}"
    )
