"""The status index: files.state materialised in one SQLite file, for ``status`` and reports.

One row per file key holds the columns people filter and count by, plus the whole FileState as
compressed JSON (its history answers ``status PATH``; rows an earlier release wrote as plain JSON
read the same). An index written before the ``warning`` column existed gets it on open (empty: no
warning was recorded before it). The ``meta`` table holds the
next files.state offset to consume per partition. The caller consumes files.state from
:meth:`StatusIndex.offsets` and hands each batch to :meth:`StatusIndex.apply`, which writes the
rows and the offsets in one transaction: after a crash the index resumes exactly after the last
batch it holds, and a record below a stored offset is skipped, so re-applying a batch changes
nothing.

Memory stays bounded whatever the number of files: queries stream rows from their own connection
(WAL lets them read beside the writer) and reports are aggregated by SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from consumers.state.fold import transferred
from consumers.state.sqlite_file import (
    SETTLED_ROW,
    UNSETTLED_ROW,
    SqliteFile,
    guarded,
    packed,
    state_codec,
    unapplied,
    unpacked,
)
from consumers.state.sqlite_file import StatusIndexBusyError as StatusIndexBusyError
from consumers.state.sqlite_file import StatusIndexCorruptError as StatusIndexCorruptError
from consumers.state.sqlite_file import StatusIndexError as StatusIndexError
from consumers.state.status_report import (
    TOP_REASONS,
    prepare,
    report_lines,
    waiting_counts,
    warning_counts,
)

SCHEMA_VERSION = 3  # 2: the warning column; 3: the files counted per state
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    path TEXT NOT NULL,
    sensor TEXT,
    date TEXT,
    day TEXT NOT NULL,
    state TEXT NOT NULL,
    version TEXT NOT NULL,
    size INTEGER NOT NULL,
    arrived_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    reason TEXT,
    transferred INTEGER NOT NULL,
    ingested INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    record TEXT NOT NULL,
    warning TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    partition INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL
);
"""
_COLUMNS = (
    "key, site, path, sensor, date, day, state, version, size, arrived_ms, updated_ms, reason,"
    " transferred, ingested, deleted, failed, record, warning"
)
_UPSERT = f"INSERT OR REPLACE INTO files ({_COLUMNS}) VALUES ({', '.join('?' * 18)})"
# The files and bytes per state (and whether at the destination) in the status index, kept as
# rows are written, so that counting them reads a few rows whatever the history (up counts at
# every progress line, the indexer for its gauge). Kept by the writer: triggers would add about
# a third to the cost of a write (BENCHMARKS.md, "Scale").
_COUNTS_TABLE = (
    "CREATE TABLE state_counts (state TEXT NOT NULL, transferred INTEGER NOT NULL,"
    " files INTEGER NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (state, transferred))"
    " WITHOUT ROWID"
)
_COUNTS_COLUMNS = ["state", "transferred", "files", "bytes"]
_COUNTED = "state, transferred, size"  # what a row adds to the counts
_COUNTED_AT = [_COLUMNS.replace(" ", "").split(",").index(c) for c in _COUNTED.split(", ")]
_ADD_COUNTS = (
    "INSERT INTO state_counts VALUES (?, ?, ?, ?) ON CONFLICT(state, transferred)"
    " DO UPDATE SET files = files + excluded.files, bytes = bytes + excluded.bytes"
)
_TRIGGERS = ("files_in", "files_out", "files_moved")  # an earlier layout's, dropped on open
Counted = Sequence[Any]  # a row's state, transferred and size
_SAVE_OFFSET = (
    "INSERT INTO meta (partition, next_offset) VALUES (?, ?) ON CONFLICT(partition)"
    " DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)"
)
# The secondary indexes of every index and view, by name (the key's is the table's own).
_INDEXES = {
    "files_state": "CREATE INDEX IF NOT EXISTS files_state ON files(state, key)",
    "files_settled": f"CREATE INDEX IF NOT EXISTS files_settled ON files(updated_ms) WHERE {SETTLED_ROW}",
}
# For status --sensor and report: a view that keeps no records answers neither, and goes without.
_FULL_ONLY = {
    "files_sensor": "CREATE INDEX IF NOT EXISTS files_sensor ON files(sensor, key)",
    "files_day": "CREATE INDEX IF NOT EXISTS files_day ON files(day)",
}
_PRUNE = f"DELETE FROM files INDEXED BY files_settled WHERE {SETTLED_ROW} AND updated_ms < ?"
_LISTED = "key, site, path, sensor, date, state, version, size, updated_ms, reason, warning"
_KEYS_PER_QUERY = 500  # well below SQLite's limit of bound parameters per statement


class Recorded(NamedTuple):
    """A FileState as read from files.state: its fields before the history (all the columns
    need) and the record's own bytes (what the row keeps), so that nothing is decoded whole."""

    head: Mapping[str, Any]
    record: bytes


# One consumed files.state record: partition, offset, key, and the FileState (None: a tombstone),
# decoded (its record encoded again if the row keeps one) or as read (:class:`Recorded`).
StateRecord = tuple[int, int, str, Mapping[str, Any] | Recorded | None]


class StateSummary(NamedTuple):
    """What a row's columns say of a file's current record."""

    version: str
    state: str
    transferred: bool


class StatusIndex(SqliteFile):
    """The on-disk view of files.state. One writer at a time; any number of readers."""

    def __init__(
        self, path: str | Path, *, busy_timeout_s: float = 30.0, keep_records: bool = True
    ) -> None:
        """``keep_records=False``: rows hold their columns only (no record, so no :meth:`get`)
        and have no sensor or day index (for ``status --sensor`` and reports), for a view that
        decides by the columns and must be cheap to keep."""
        super().__init__(path, busy_timeout_s)
        self.keep_records = keep_records
        try:
            with guarded(self.path), self._transaction():
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self._db.execute(statement)
                self._make_indexes()
                _add_warning_column(self._db)
                _count_states(self._db, keep_records)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._prepare()
        except BaseException:
            self._db.close()
            raise

    HOLDS_ANYTHING = "SELECT EXISTS (SELECT 1 FROM files) OR EXISTS (SELECT 1 FROM meta)"
    _LAYOUT = SCHEMA_VERSION

    def _prepare(self) -> None:
        prepare(self._db)

    def _secondary_indexes(self) -> list[str]:
        return [*_INDEXES, *(_FULL_ONLY if self.keep_records else ())]

    def _make_indexes(self) -> None:
        """Create the secondary indexes this kind of index has (and drop those it has not)."""
        for create in _INDEXES.values():
            self._db.execute(create)
        for name, create in _FULL_ONLY.items():
            self._db.execute(create if self.keep_records else f"DROP INDEX IF EXISTS {name}")

    def offsets(self) -> dict[int, int]:
        """The next files.state offset to consume, per partition (as a Kafka commit states it)."""
        with guarded(self.path):
            rows = self._db.execute("SELECT partition, next_offset FROM meta").fetchall()
        return {int(p): int(o) for p, o in rows}

    def apply(self, records: Iterable[StateRecord]) -> int:
        """Write one consumed batch and its offsets in one transaction; returns the records applied.

        A FileState replaces its key's row; a tombstone (None) deletes it. Records below the stored
        offset of their partition were applied before and are skipped. Within the batch only the
        last record of each key is written: it is what the row holds after the batch either way.
        """
        with guarded(self.path), self._transaction():
            stored = dict(self._db.execute("SELECT partition, next_offset FROM meta").fetchall())
            latest, reached, applied = unapplied(records, stored)
            keep = self.keep_records
            rows = [_row(key, value, keep) for key, value in latest.items() if value is not None]
            if keep:  # the rows replaced or removed leave the counts, the new ones join them
                self._count(self._rows_of(_COUNTED, latest), -1)
                self._count(([row[i] for i in _COUNTED_AT] for row in rows), 1)
            gone = [(key,) for key, value in latest.items() if value is None]
            self._db.executemany("DELETE FROM files WHERE key = ?", gone)
            self._db.executemany(_UPSERT, rows)
            self._db.executemany(_SAVE_OFFSET, reached.items())
        return applied

    def prune(self, before_ms: int) -> int:
        """Remove the rows of files settled (DONE or MISSING) before ``before_ms``; how many.
        Their records stay in files.state (see :mod:`consumers.state.retention`)."""
        with guarded(self.path), self._transaction():
            gone = self._db.execute(f"{_PRUNE} RETURNING {_COUNTED}", (before_ms,)).fetchall()
            if self.keep_records:
                self._count(gone, -1)
        return len(gone)

    def _count(self, rows: Iterable[Counted], sign: int) -> None:
        """Add ``rows`` to the files and bytes counted per state (``sign`` -1: take them away)."""
        sums: dict[tuple[str, int], list[int]] = {}
        for state, moved, size in rows:
            total = sums.setdefault((state, int(bool(moved))), [0, 0])
            total[0] += sign
            total[1] += sign * int(size)
        changes = [(state, moved, files, size) for (state, moved), (files, size) in sums.items()]
        self._db.executemany(_ADD_COUNTS, changes)

    def get(self, key: str) -> dict[str, Any] | None:
        """The whole FileState of ``key`` (with its history), or None when the file is unknown."""
        self._needs_records()
        with guarded(self.path):
            row = self._db.execute("SELECT record FROM files WHERE key = ?", (key,)).fetchone()
        return None if row is None else unpacked(row[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The whole FileState of each known key among ``keys`` (unknown keys are left out)."""
        self._needs_records()
        return {k: unpacked(r) for k, r in self._rows_of("key, record", keys)}

    def summaries(self, keys: Iterable[str]) -> dict[str, StateSummary]:
        """:meth:`summary` of each known key among ``keys``, in as few queries as it takes."""
        rows = self._rows_of("key, version, state, transferred", keys)
        return {k: StateSummary(str(v), str(s), bool(t)) for k, v, s, t in rows}

    def _rows_of(self, columns: str, keys: Iterable[str]) -> list[tuple[Any, ...]]:
        """``columns`` of the rows of ``keys`` (each key asked once; unknown keys give no row)."""
        wanted = list(dict.fromkeys(keys))
        rows: list[tuple[Any, ...]] = []
        with guarded(self.path):
            for i in range(0, len(wanted), _KEYS_PER_QUERY):
                chunk = wanted[i : i + _KEYS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {columns} FROM files WHERE key IN ({marks})"
                rows.extend(self._db.execute(sql, chunk).fetchall())
        return rows

    def summary(self, key: str) -> StateSummary | None:
        """The version, state and transferred flag of ``key`` (None when unknown), from the row's
        columns: what the batcher and the sweeper decide by, without parsing the record."""
        sql = "SELECT version, state, transferred FROM files WHERE key = ?"
        with guarded(self.path):
            row = self._db.execute(sql, (key,)).fetchone()
        return None if row is None else StateSummary(str(row[0]), str(row[1]), bool(row[2]))

    def query(
        self,
        state: str | None = None,
        sensor: str | None = None,
        *,
        updated_before_ms: int | None = None,
        unsettled: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Files matching every given filter, by key, streamed one row at a time;
        ``unsettled``: only files not settled (neither DONE nor MISSING), read through the state
        index, so as many rows as are in flight or waiting whatever the history.

        Each item has key, site, path (relative to the cache root), sensor, date, state, version,
        size, updated_ms, updated_at (ISO-8601 UTC), reason and warning.
        """
        filters = {"state = ?": state, "sensor = ?": sensor, "updated_ms < ?": updated_before_ms}
        chosen = {clause: value for clause, value in filters.items() if value is not None}
        clauses = [*chosen, *([UNSETTLED_ROW] if unsettled else [])]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_LISTED} FROM files{where} ORDER BY key"
        return self._stream(sql, tuple(chosen.values()))

    def counts_by_state(self, sensor: str | None = None) -> dict[str, int]:
        """How many files (of ``sensor``, when given) are in each state (states with no file
        are left out)."""
        args: tuple[str, ...] = ()
        if sensor is None and self.keep_records:  # kept as rows change: a few rows
            sql = (
                "SELECT state, SUM(files) FROM state_counts GROUP BY state HAVING SUM(files) > 0"
                " ORDER BY state"
            )
        elif sensor is None:
            sql = "SELECT state, COUNT(*) FROM files GROUP BY state ORDER BY state"
        else:
            sql = "SELECT state, COUNT(*) FROM files WHERE sensor = ? GROUP BY state ORDER BY state"
            args = (sensor,)
        with guarded(self.path):
            return {str(s): int(n) for s, n in self._db.execute(sql, args).fetchall()}

    def bytes_transferred(self) -> int:
        """The bytes of every file whose current version is at the destination (``report``'s
        ``bytes_transferred`` over all its lines)."""
        table, size = ("state_counts", "bytes") if self.keep_records else ("files", "size")
        sql = f"SELECT SUM({size}) FROM {table} WHERE transferred = 1 AND state != 'MISSING'"
        with guarded(self.path):
            (moved,) = self._db.execute(sql).fetchone()
        return int(moved or 0)

    def oldest_updated_ms(self, states: Iterable[str]) -> dict[str, int]:
        """The last change of the oldest file in each of ``states`` (states with none left out),
        read by SQLite from those states' rows only (the state index)."""
        wanted = sorted(set(states))
        sql = (
            f"SELECT state, MIN(updated_ms) FROM files WHERE state IN ({', '.join('?' * len(wanted))})"
            " GROUP BY state"
        )
        with guarded(self.path):
            return {str(s): int(m) for s, m in self._db.execute(sql, wanted).fetchall()}

    def unsettled_before(self, before_ms: int) -> dict[str, int]:
        """How many files not settled (neither DONE nor MISSING) have not changed since before
        ``before_ms``, by state (states with none left out): the stuck files, counted by SQLite
        from the rows of unsettled files only (the state index), however many have settled."""
        sql = (
            f"SELECT state, COUNT(*) FROM files WHERE {UNSETTLED_ROW} AND updated_ms < ?"
            " GROUP BY state ORDER BY state"
        )
        with guarded(self.path):
            return {str(s): int(n) for s, n in self._db.execute(sql, (before_ms,)).fetchall()}

    def sensors(self) -> list[str]:
        """The sensors that have files, by name."""
        sql = "SELECT DISTINCT sensor FROM files WHERE sensor IS NOT NULL ORDER BY sensor"
        with guarded(self.path):
            return [str(s) for (s,) in self._db.execute(sql).fetchall()]

    def report(self) -> list[dict[str, Any]]:
        """Files and bytes per sensor and day: arrived, transferred, ingested, deleted, failed.

        The day is the file's date directory, or the UTC day it arrived when it has none. Each file
        counts once, as its current version; a MISSING file never arrived and is not counted here
        (see :meth:`waiting`). Transferred means the version is at the destination (whatever came
        after); failed means FAILED or QUARANTINED, or a reason is recorded (an ingest failure,
        final or retried, a refused deletion).
        """
        with guarded(self.path):
            return report_lines(self._db)

    def waiting(self, top_reasons: int = TOP_REASONS) -> dict[str, dict[str, Any]]:
        """Files and bytes per thing the files not DONE wait for (a batch, their transfer, ingest,
        deletion, a person: MISSING or QUARANTINED), with the most common reasons of those waiting
        for ingest (see :func:`consumers.state.status_report.waiting_counts`)."""
        with guarded(self.path):
            return waiting_counts(self._db, top_reasons)

    def warnings(self) -> dict[str, int]:
        """Files and bytes whose current version carries a warning (catalogued, but not the
        usual way: see :func:`consumers.state.status_report.warning_counts`)."""
        with guarded(self.path):
            return warning_counts(self._db)

    def reset(self) -> None:
        """Forget every row and offset, so the index is rebuilt from the start of files.state."""
        with guarded(self.path), self._transaction():
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM meta")
            if self.keep_records:
                self._db.execute("DELETE FROM state_counts")

    def _needs_records(self) -> None:
        if not self.keep_records:
            raise StatusIndexError(f"status index {self.path} keeps no whole records")

    def _stream(self, sql: str, params: tuple[Any, ...]) -> Iterator[dict[str, Any]]:
        """Rows of ``sql`` from a connection of their own, closed when the iteration ends."""
        db = self._connect()
        try:
            with guarded(self.path):
                for row in db.execute(sql, params):
                    yield _listed(row)
        finally:
            db.close()


def _row(
    key: str, given: Mapping[str, Any] | Recorded, keep_record: bool = True
) -> tuple[Any, ...]:
    """The ``files`` row of one FileState (with the whole record packed, or an empty one)."""
    value = given.head if isinstance(given, Recorded) else given
    state = value["state"]
    failed = state in ("FAILED", "QUARANTINED") or value["reason"] is not None
    if not keep_record:
        record = b""
    elif isinstance(given, Recorded):
        record = given.record
    else:
        record = state_codec().encode("FileState", dict(given))
    return (
        key,
        value["site"],
        value["path"],
        value["sensor"],
        value["date"],
        value["date"] or _utc(value["arrived_ms"])[:10],
        state,
        value["version"],
        value["size"],
        value["arrived_ms"],
        value["updated_ms"],
        value["reason"],
        transferred(value),
        bool(value["ingested"]),
        bool(value["deleted"]),
        failed,
        packed(record) if keep_record else "",
        value.get("warning"),  # a record kept by an earlier release may lack it
    )


def _add_warning_column(db: sqlite3.Connection) -> None:
    """Give an index laid out before the ``warning`` column that column (empty: no record had a
    warning then), so it goes on from its stored offsets instead of being rebuilt."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
    if "warning" not in columns:
        db.execute("ALTER TABLE files ADD COLUMN warning TEXT")


def _count_states(db: sqlite3.Connection, counted: bool) -> None:
    """Lay out the files counted per state in the status index (``counted``; :meth:`StatusIndex._count`
    keeps them); an index laid out before them (or with other counts) is counted once, here, so it
    goes on from its stored offsets instead of being rebuilt. A view is never asked for them and
    keeps none."""
    for trigger in _TRIGGERS:
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    columns = [row[1] for row in db.execute("PRAGMA table_info(state_counts)")]
    if not counted or columns not in ([], _COUNTS_COLUMNS):
        db.execute("DROP TABLE IF EXISTS state_counts")
        columns = []
    if counted and not columns:
        db.execute(_COUNTS_TABLE)
        db.execute(
            "INSERT INTO state_counts"
            " SELECT state, transferred, COUNT(*), SUM(size) FROM files GROUP BY state, transferred"
        )


def _listed(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(_LISTED.split(", "), row, strict=True))
    item["updated_at"] = _utc(item["updated_ms"])
    return item


def _utc(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC, e.g. ``2017-08-24T12:40:01.916Z``."""
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
