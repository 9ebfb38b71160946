"""From one tailed log line to what the gantry producer emits: a FileArrived, a DeadLetter, or a count.

Pure apart from the ``stat`` and ``listdir`` callables it is given, so every rule is testable
without a filesystem or Kafka.
"""

from __future__ import annotations

import os
import stat as statmod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from producers.gantry.paths import (
    CachePath,
    PathClassifier,
    PathRejected,
    PathRules,
    cache_path,
)
from producers.gantry.paths import matching_paths as candidate_paths
from producers.gantry.tailer import LineKind, TailedLine
from producers.gantry.xferlog import (
    AccessMode,
    Malformed,
    NasEntry,
    Skipped,
    Upload,
    XferRecord,
    parse_nas_line,
    parser_for,
)

Stat = Callable[[str], os.stat_result | None]
ListDir = Callable[[bytes], Iterable[bytes]]


@dataclass
class LineCounts:
    """What the producer did with the lines it read; exported as metrics and in logs."""

    lines: int = 0
    uploads: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)


class Arrival(NamedTuple):
    """A whitelisted upload found in the cache."""

    where: CachePath
    size: int
    mtime_ns: int
    record: XferRecord | None


@dataclass(frozen=True)
class Rejected:
    """A line that becomes a dead letter, with the reason."""

    reason: str


def lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


class LineHandler:
    """Turns tailed lines of one log (xferlog or nas.log) into arrivals, rejections or counts."""

    def __init__(
        self,
        rules: PathRules,
        kind: str,
        zone: str,
        stat: Stat = lstat_or_none,
        listdir: ListDir | None = None,
    ) -> None:
        if kind not in ("xferlog", "nas_log"):
            raise ValueError(f"unknown log kind {kind!r}")
        self.rules = rules
        self.classify = PathClassifier(rules)
        self._root = os.path.join(rules.cache_root, "")
        self.kind = kind
        self.parser = parser_for(zone)
        self.stat = stat
        self.listdir = listdir or self._listdir
        self.counts = LineCounts()

    def handle(self, line: TailedLine) -> Arrival | Rejected | None:
        """An arrival to emit, a rejection to dead-letter, or None (counted and skipped)."""
        self.counts.lines += 1
        if line.kind is LineKind.OVERSIZE:
            return self._reject(f"line longer than the {len(line.data)}-byte bound", "oversize")
        if line.kind is LineKind.FRAGMENT:
            return self._reject("rotated log ended in the middle of a line", "fragment")
        if self.kind == "xferlog":
            return self._xferlog(line.data)
        return self._nas(line.data)

    def _xferlog(self, data: bytes) -> Arrival | Rejected | None:
        result = self.parser.classify(data)
        if isinstance(result, Malformed):
            return self._reject(result.reason, "malformed")
        if isinstance(result, Skipped):
            self.counts.skipped[str(result.reason)] += 1
            return None
        assert isinstance(result, Upload)
        record = result.record
        chrooted = record.access_mode in (AccessMode.ANONYMOUS, AccessMode.GUEST)
        return self._found(self.classify(record.filename, chrooted), record)

    def _nas(self, data: bytes) -> Arrival | Rejected | None:
        entry = parse_nas_line(data)
        if entry is None:
            self.counts.skipped["blank"] += 1
            return None
        if isinstance(entry, Malformed):
            return self._reject(entry.reason, "malformed")
        assert isinstance(entry, NasEntry)
        return self._found(self.classify(entry.path), None)

    def _found(
        self, where: CachePath | PathRejected, record: XferRecord | None
    ) -> Arrival | Rejected | None:
        if isinstance(where, PathRejected):
            if where.dead_letter:
                return self._reject(where.reason, str(where.kind))
            self.counts.skipped[str(where.kind)] += 1
            return None
        st = self.stat(self._root + where.rel)  # rel is relative and normalised
        if st is None:
            resolved = self._resolve(where)
            if resolved is None:
                return self._reject(f"file {where.rel!r} is missing from the cache", "missing")
            where, st = resolved
        if not statmod.S_ISREG(st.st_mode):
            return self._reject(f"{where.rel!r} is not a regular file in the cache", "not_regular")
        self.counts.uploads += 1
        return Arrival(where, st.st_size, st.st_mtime_ns, record)

    def _resolve(self, where: CachePath) -> tuple[CachePath, os.stat_result] | None:
        """vsftpd logs spaces as ``_`` and odd bytes as ``?``: find the one file the name stands for."""
        logged = os.fsencode(where.rel)
        if b"_" not in logged and b"?" not in logged:
            return None
        found = []
        for rel in candidate_paths(logged, self.listdir):
            st = self.stat(os.path.join(self.rules.cache_root, os.fsdecode(rel)))
            if st is not None and rel != logged:
                found.append((rel, st))
        if len(found) != 1:
            return None  # ambiguous or absent: the sweeper will find the file by walking
        rel, st = found[0]
        actual = cache_path(rel, self.rules)
        return (actual, st) if isinstance(actual, CachePath) else None

    def _listdir(self, rel_dir: bytes) -> list[bytes]:
        return os.listdir(os.path.join(os.fsencode(self.rules.cache_root), rel_dir))

    def _reject(self, reason: str, kind: str) -> Rejected:
        self.counts.dead_letters[kind] += 1
        return Rejected(reason)


def arrival_value(
    arrival: Arrival, line: TailedLine, source: str, emitted_ms: int
) -> dict[str, Any]:
    """The FileArrived event of an arrival read from ``line``."""
    where, record = arrival.where, arrival.record
    path, raw_path = where.rel, None
    if not path.isascii():
        raw = os.fsencode(path)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            path, raw_path = raw.decode("utf-8", "backslashreplace"), raw
    return {
        "event_id": f"{line.source.fingerprint[:16]}:{line.offset}",
        "key": f"{where.site}/{path}",
        "version": f"{arrival.size}:{arrival.mtime_ns}",
        "site": where.site,
        "path": path,
        "raw_path": raw_path,
        "sensor": where.sensor,
        "date": where.date,
        "timestamp": where.timestamp,
        "dest_path": where.dest_rel
        if raw_path is None
        else os.fsencode(where.dest_rel).decode("utf-8", "backslashreplace"),
        "size": arrival.size,
        "mtime_ns": arrival.mtime_ns,
        "source": "XFERLOG" if source == "xferlog" else "NAS_LOG",
        "source_ref": f"{line.source.name}@{line.offset}",
        "logged_ms": int(record.time.timestamp() * 1000) if record else None,
        "remote_host": record.remote_host if record else None,
        "username": record.username if record else None,
        "emitted_ms": emitted_ms,
        "attempt": 1,
    }
