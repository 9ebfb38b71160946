"""What ``terra-xfer report`` counts, as queries over the status index's ``files`` table.

Two views of the same rows, both aggregated by SQLite so memory stays bounded however many files
there are: per sensor and day, what arrived and how far it got (:func:`report_lines`); and what
every file not DONE waits for, with the most common reasons of the files waiting for ingest
(:func:`waiting_counts`), so an operator sees a stage that keeps failing (a catalog down) as it
happens, not as files that quietly stop short of DONE. A third count, of files that reached the
catalog with a warning (:func:`warning_counts`), shows what DONE alone would hide.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from consumers.state.transitions import INGEST_REASON, reason_cause

STAGES = ("transferred", "ingested", "deleted", "failed")
# What a file not DONE waits for, in the order the report lists them.
WAITING = ("batch", "transfer", "ingest", "deletion", "missing", "quarantined")
TOP_REASONS = 5
_WAITING_FOR = """CASE
    WHEN state = 'MISSING' THEN 'missing'
    WHEN state = 'QUARANTINED' THEN 'quarantined'
    WHEN state = 'ARRIVED' THEN 'batch'
    WHEN state IN ('BATCHED', 'FAILED') THEN 'transfer'
    WHEN transferred AND NOT ingested THEN 'ingest'
    WHEN ingested AND NOT deleted THEN 'deletion'
END"""
_CAUSE = "reason_cause"


def prepare(db: sqlite3.Connection) -> None:
    """Give ``db`` the SQL function the reason counts group by (see :func:`reason_cause`)."""
    db.create_function(_CAUSE, 1, _cause, deterministic=True)


def _cause(reason: str | None) -> str | None:
    return None if reason is None else reason_cause(reason)


def report_lines(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Files and bytes per sensor and day: arrived, transferred, ingested, deleted, failed.

    A MISSING file never arrived (the log named it, the cache did not hold it): it is left out
    here and counted among the waiting ones.
    """
    sums = ", ".join(f"SUM({s}), SUM({s} * size)" for s in STAGES)
    sql = (
        f"SELECT sensor, day, COUNT(*), SUM(size), {sums} FROM files WHERE state != 'MISSING'"
        " GROUP BY sensor, day ORDER BY day, sensor"
    )
    return [_report_line(row) for row in db.execute(sql).fetchall()]


def _report_line(row: tuple[Any, ...]) -> dict[str, Any]:
    sensor, day, files, size, *stages = row
    line: dict[str, Any] = {"sensor": sensor, "date": day}
    line |= {"files_arrived": int(files), "bytes_arrived": int(size or 0)}
    for i, stage in enumerate(STAGES):
        line[f"files_{stage}"] = int(stages[2 * i] or 0)
        line[f"bytes_{stage}"] = int(stages[2 * i + 1] or 0)
    return line


def waiting_counts(db: sqlite3.Connection, top: int = TOP_REASONS) -> dict[str, dict[str, Any]]:
    """Files and bytes per thing waited for (every one of :data:`WAITING`, zeros included).

    A batch: ARRIVED. Its transfer: BATCHED or FAILED (a retry to come). Ingest: at the
    destination, not in the catalog yet, whatever its deletion. Deletion: in the catalog, still in
    the cache. MISSING and QUARANTINED wait for a person. The ingest group also lists its ``top``
    most common reasons, the attempt of a retry left out so one cause counts once.
    """
    sql = f"SELECT {_WAITING_FOR} AS waiting, COUNT(*), SUM(size) FROM files GROUP BY waiting"
    counts: dict[str, dict[str, Any]] = {name: {"files": 0, "bytes": 0} for name in WAITING}
    for name, files, size in db.execute(sql).fetchall():
        if name is not None:
            counts[name] = {"files": int(files), "bytes": int(size or 0)}
    counts["ingest"]["reasons"] = _ingest_reasons(db, top)
    return counts


def warning_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Files and bytes whose current version carries a warning: in the catalog, but not the usual
    way (a ``*_metadata.json`` that could not be read, filed as a file). They go on to DONE, so
    nothing else counts them; the count tells a person there are some to look at."""
    sql = "SELECT COUNT(*), SUM(size) FROM files WHERE warning IS NOT NULL"
    files, size = db.execute(sql).fetchone()
    return {"files": int(files), "bytes": int(size or 0)}


def _ingest_reasons(db: sqlite3.Connection, top: int) -> list[dict[str, Any]]:
    sql = (
        f"SELECT {_CAUSE}(reason) AS cause, COUNT(*) AS n FROM files"
        " WHERE transferred AND NOT ingested AND substr(reason, 1, ?) = ?"
        " GROUP BY cause ORDER BY n DESC, cause LIMIT ?"
    )
    rows = db.execute(sql, (len(INGEST_REASON), INGEST_REASON, top)).fetchall()
    return [{"reason": str(cause), "files": int(n)} for cause, n in rows]
