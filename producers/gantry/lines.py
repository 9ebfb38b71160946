"""From one tailed log line to what the gantry producer emits: a FileArrived, a DeadLetter (with a
FileMissing when the file the line names is not in the cache), or a count.

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
from terra_xfer.sites.gantry import (
    CachePath,
    PathClassifier,
    PathRejected,
    PathRules,
    cache_path,
    file_fields,
    text_of,
)
from terra_xfer.sites.gantry import matching_paths as candidate_paths

_UNCHECKED = object()
_DIR_CHECKS_LIMIT = 65_536

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


@dataclass(frozen=True)
class Missing(Rejected):
    """A whitelisted, well-formed path that is not in the cache: a dead letter, and a FileMissing
    so that the file has a record (MISSING, with the reason) until a version of it arrives."""

    where: CachePath
    record: XferRecord | None


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
        self._dir_checks: dict[str, str | None] = {}
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
        try:
            unsafe = self._symlinked_parent(where.rel)
            if unsafe is not None:
                return self._reject(unsafe, "symlink")
            st = self.stat(self._root + where.rel)  # rel is relative and normalised
            if st is None:
                candidates = self._candidates(where)
                resolved = self._resolved(candidates)
                if resolved is None:
                    return self._missing(where, record, len(candidates))
                where, st = resolved
        except OSError as exc:  # a name too long, a symlink loop, an unreadable directory
            return self._reject(
                f"cannot stat {where.rel!r} in the cache: {exc.strerror}", "unreadable"
            )
        if not statmod.S_ISREG(st.st_mode):
            return self._reject(f"{where.rel!r} is not a regular file in the cache", "not_regular")
        self.counts.uploads += 1
        return Arrival(where, st.st_size, st.st_mtime_ns, record)

    def _symlinked_parent(self, rel: str) -> str | None:
        """Why the directories above ``rel`` are not plain directories of the cache, or None.

        The file itself is lstat()ed; a symlink among its parents would lead outside the cache,
        so each directory is checked (once: the answer is kept per directory).
        """
        parent = rel.rpartition("/")[0]
        if not parent:
            return None
        known = self._dir_checks.get(parent, _UNCHECKED)
        if known is not _UNCHECKED:
            return known  # type: ignore[return-value]
        reason: str | None = None
        prefix = self._root
        for part in parent.split("/"):
            prefix += part
            st = self.stat(prefix)
            if st is None:
                return None  # missing: the file is reported missing; not cached
            if not statmod.S_ISDIR(st.st_mode):
                kind = "a symlink" if statmod.S_ISLNK(st.st_mode) else "not a directory"
                reason = f"{prefix[len(self._root) :]!r} in the cache is {kind}"
                break
            prefix += "/"
        if len(self._dir_checks) >= _DIR_CHECKS_LIMIT:
            self._dir_checks.clear()
        self._dir_checks[parent] = reason
        return reason

    def _candidates(self, where: CachePath) -> list[tuple[bytes, os.stat_result]]:
        """vsftpd logs spaces as ``_`` and odd bytes as ``?``: the files the name may stand for."""
        logged = os.fsencode(where.rel)
        if b"_" not in logged and b"?" not in logged:
            return []
        found = []
        for rel in candidate_paths(logged, self.listdir):
            st = self.stat(os.path.join(self.rules.cache_root, os.fsdecode(rel)))
            if st is not None and rel != logged:
                found.append((rel, st))
        return found

    def _resolved(
        self, found: list[tuple[bytes, os.stat_result]]
    ) -> tuple[CachePath, os.stat_result] | None:
        """The one file a logged name stands for; None when ambiguous or absent (the sweeper
        finds such files by walking)."""
        if len(found) != 1:
            return None
        rel, st = found[0]
        actual = cache_path(rel, self.rules)
        return (actual, st) if isinstance(actual, CachePath) else None

    def _missing(self, where: CachePath, record: XferRecord | None, matches: int) -> Missing:
        reason = f"file {where.rel!r} is missing from the cache"
        if matches > 1:
            reason += (
                f"; {matches} files match its logged name (vsftpd logs a space as '_'), "
                "the sweeper ships them"
            )
        self.counts.dead_letters["missing"] += 1
        return Missing(reason, where, record)

    def _listdir(self, rel_dir: bytes) -> list[bytes]:
        return os.listdir(os.path.join(os.fsencode(self.rules.cache_root), rel_dir))

    def _reject(self, reason: str, kind: str) -> Rejected:
        self.counts.dead_letters[kind] += 1
        return Rejected(reason)


def arrival_value(
    arrival: Arrival, line: TailedLine, source: str, emitted_ms: int
) -> dict[str, Any]:
    """The FileArrived event of an arrival read from ``line``."""
    record = arrival.record
    return {
        "version": f"{arrival.size}:{arrival.mtime_ns}",
        **file_fields(arrival.where),
        "size": arrival.size,
        "mtime_ns": arrival.mtime_ns,
        **_line_fields(line, source, record),
        "remote_host": record.remote_host if record else None,
        "username": text_of(record.username) if record else None,
        "emitted_ms": emitted_ms,
        "attempt": 1,
    }


def missing_value(
    missing: Missing, line: TailedLine, source: str, emitted_ms: int
) -> dict[str, Any]:
    """The FileMissing event of a file ``line`` names that the cache did not hold."""
    fields = file_fields(missing.where)
    return {
        **{name: fields[name] for name in ("key", "site", "path", "raw_path", "sensor", "date")},
        "reason": missing.reason,
        **_line_fields(line, source, missing.record),
        "logged_size": missing.record.size if missing.record else None,
        "emitted_ms": emitted_ms,
    }


def _line_fields(line: TailedLine, source: str, record: XferRecord | None) -> dict[str, Any]:
    """What an event tells of the log line it came from: its id, source and upload time."""
    return {
        "event_id": f"{line.source.fingerprint[:16]}:{line.offset}",
        "source": "XFERLOG" if source == "xferlog" else "NAS_LOG",
        "source_ref": f"{line.source.name}@{line.offset}",
        "logged_ms": int(record.time.timestamp() * 1000) if record else None,
    }
