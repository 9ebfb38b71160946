"""The embedded catalog: an SQLite file mirroring Clowder's model, for runs without a Clowder.

Collections (each with its parent), datasets (linked to collections), files in datasets, and JSON-LD
metadata rows on datasets and files. UNIQUE constraints make every insert a get-or-create, so a
replayed item adds nothing. Several processes may ingest into one file at once: WAL mode lets
readers run beside the writer, and each call is one ``BEGIN IMMEDIATE`` transaction, retried while
another writer holds the lock. :meth:`LocalCatalog.ingest_many` files a whole batch in one
transaction, each item in a savepoint of its own, so an item the catalog refuses leaves no row
behind and does not hold back the others.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from consumers.catalog.base import (
    CatalogPermanentError,
    CatalogTransientError,
    IngestItem,
    IngestResult,
)
from consumers.catalog.naming import Placement, clean_metadata_keys, content_hash, placement_of
from terra_xfer.errors import PermanentError

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    parent_id INTEGER REFERENCES collections(id),
    created_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS collections_title_parent
    ON collections(title, IFNULL(parent_id, 0));
CREATE TABLE IF NOT EXISTS datasets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dataset_collections (
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    PRIMARY KEY (collection_id, dataset_id)
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT,
    file_key TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (dataset_id, name)
);
CREATE TABLE IF NOT EXISTS metadata (
    id INTEGER PRIMARY KEY,
    target_type TEXT NOT NULL CHECK (target_type IN ('dataset', 'file')),
    target_id INTEGER NOT NULL,
    content TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (target_type, target_id, content_hash)
);
"""


class LocalCatalog:
    """A catalog in one SQLite file; safe for several threads and processes at once."""

    name = "local"

    def __init__(
        self, path: str | Path, *, busy_timeout_s: float = 5.0, busy_attempts: int = 20
    ) -> None:
        self.path = Path(path)
        self._busy_attempts = busy_attempts
        self._lock = threading.Lock()
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            self._retry_busy(self._open)
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"LocalCatalog({str(self.path)!r})"

    def __enter__(self) -> LocalCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingest(self, item: IngestItem) -> IngestResult:
        """Get-or-create the item's collections, dataset, file and metadata in one transaction."""
        placement = placement_of(item)
        result = self._retry_busy(
            lambda: self._transaction(lambda: _ingest(self._db, item, placement))
        )
        log.debug(
            "ingested %s into dataset %s (created=%s)", item.key, result.dataset_id, result.created
        )
        return result

    def ingest_many(self, items: Sequence[IngestItem]) -> list[IngestResult | PermanentError]:
        """Ingest every item in one transaction; each outcome is its result or the permanent error
        that refused it. A transient error (the database stays locked) fails the whole call and
        commits nothing."""
        outcomes: list[IngestResult | PermanentError | None] = []
        work: list[tuple[int, IngestItem, Placement]] = []
        for item in items:
            try:
                work.append((len(outcomes), item, placement_of(item)))
                outcomes.append(None)
            except PermanentError as exc:
                outcomes.append(exc)
        if work:
            done = self._retry_busy(lambda: self._transaction(lambda: self._each(work)))
            for (at, _item, _placement), outcome in zip(work, done, strict=True):
                outcomes[at] = outcome
        return [o for o in outcomes if o is not None]

    def _each(
        self, work: Sequence[tuple[int, IngestItem, Placement]]
    ) -> list[IngestResult | PermanentError]:
        """The body of a batch transaction: each item in a savepoint, rolled back if refused.

        ``known`` remembers the ids this transaction has got or created, so an item shares the
        lookups of those before it; an item rolled back takes its own additions with it.
        """
        known: dict[tuple[object, ...], int] = {}
        done: list[IngestResult | PermanentError] = []
        for _at, item, placement in work:
            before = dict(known)
            self._db.execute("SAVEPOINT item")
            try:
                done.append(_ingest(self._db, item, placement, known))
            except (CatalogPermanentError, sqlite3.IntegrityError) as exc:
                self._db.execute("ROLLBACK TO item")
                known = before
                refused = exc if isinstance(exc, PermanentError) else _refused(item, exc)
                done.append(refused)
            self._db.execute("RELEASE item")
        return done

    def counts(self) -> dict[str, int]:
        """Rows per kind: collections, datasets, files, metadata."""
        tables = ("collections", "datasets", "files", "metadata")
        return {t: int(self._one(f"SELECT COUNT(*) FROM {t}")) for t in tables}

    def datasets(self) -> list[str]:
        """Dataset names, sorted."""
        return [r[0] for r in self._rows("SELECT name FROM datasets ORDER BY name")]

    def files_in(self, dataset_name: str) -> list[str]:
        """File names in a dataset, sorted."""
        sql = "SELECT f.name FROM files f JOIN datasets d ON d.id = f.dataset_id WHERE d.name = ?"
        return sorted(r[0] for r in self._rows(sql, dataset_name))

    def collections(self) -> list[tuple[str, str | None]]:
        """(title, parent title) of every collection, sorted by title."""
        sql = (
            "SELECT c.title, p.title FROM collections c LEFT JOIN collections p"
            " ON p.id = c.parent_id ORDER BY c.title, p.title"
        )
        return [(r[0], r[1]) for r in self._rows(sql)]

    def dataset_collections(self, dataset_name: str) -> list[str]:
        """Titles of the collections a dataset is in."""
        sql = (
            "SELECT c.title FROM dataset_collections dc"
            " JOIN collections c ON c.id = dc.collection_id"
            " JOIN datasets d ON d.id = dc.dataset_id WHERE d.name = ? ORDER BY c.title"
        )
        return [r[0] for r in self._rows(sql, dataset_name)]

    def dataset_metadata(self, dataset_name: str) -> list[dict[str, Any]]:
        """The JSON-LD contents attached to a dataset, oldest first."""
        sql = (
            "SELECT m.content FROM metadata m JOIN datasets d ON d.id = m.target_id"
            " WHERE m.target_type = 'dataset' AND d.name = ? ORDER BY m.id"
        )
        return [json.loads(r[0]) for r in self._rows(sql, dataset_name)]

    def file_metadata(self, dataset_name: str, file_name: str) -> list[dict[str, Any]]:
        """The JSON-LD contents attached to one file, oldest first."""
        sql = (
            "SELECT m.content FROM metadata m JOIN files f ON f.id = m.target_id"
            " JOIN datasets d ON d.id = f.dataset_id"
            " WHERE m.target_type = 'file' AND d.name = ? AND f.name = ? ORDER BY m.id"
        )
        return [json.loads(r[0]) for r in self._rows(sql, dataset_name, file_name)]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _open(self) -> None:
        with self._lock:
            if str(self.path) != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
        tables = {r[0] for r in self._rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"collections", "datasets", "dataset_collections", "files", "metadata"} <= tables:
            self._transaction(self._create_schema)

    def _create_schema(self) -> None:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def _transaction(self, body: Callable[[], T]) -> T:
        with self._lock, _immediate(self._db):
            return body()

    def _retry_busy(self, action: Callable[[], T]) -> T:
        """Run ``action``, retrying while another writer holds the database lock."""
        for attempt in range(self._busy_attempts):
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise CatalogTransientError(f"local catalog {self.path}: {exc}") from exc
                log.debug("local catalog busy (attempt %d): %s", attempt + 1, exc)
                time.sleep(min(0.01 * 2**attempt, 0.5))
            except sqlite3.DatabaseError as exc:
                raise CatalogPermanentError(f"local catalog {self.path}: {exc}") from exc
        raise CatalogTransientError(f"local catalog {self.path} stayed locked")

    def _rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    def _one(self, sql: str, *params: object) -> Any:
        return self._rows(sql, *params)[0][0]


def _ingest(
    db: sqlite3.Connection,
    item: IngestItem,
    placement: Placement,
    known: dict[tuple[object, ...], int] | None = None,
) -> IngestResult:
    """The body of one ingest transaction; every insert is a get-or-create.

    ``known`` (ids this transaction already got or created) spares repeating their lookups.
    """
    known = {} if known is None else known
    created = False
    collection_ids: list[int] = []
    parent: int | None = None
    for title in item.collections:
        parent, new = _remembered(
            known,
            ("collection", title, parent),
            db,
            "INSERT OR IGNORE INTO collections (title, parent_id, created_ms) VALUES (?, ?, ?)",
            (title, parent, _now_ms()),
            "SELECT id FROM collections WHERE title = ? AND parent_id IS ?",
            (title, parent),
        )
        collection_ids.append(parent)
        created |= new
    dataset_id, new = _remembered(
        known,
        ("dataset", item.dataset_name),
        db,
        "INSERT OR IGNORE INTO datasets (name, created_ms) VALUES (?, ?)",
        (item.dataset_name, _now_ms()),
        "SELECT id FROM datasets WHERE name = ?",
        (item.dataset_name,),
    )
    created |= new
    if parent is not None and ("link", parent, dataset_id) not in known:
        cur = db.execute(
            "INSERT OR IGNORE INTO dataset_collections (collection_id, dataset_id) VALUES (?, ?)",
            (parent, dataset_id),
        )
        created |= cur.rowcount == 1
        known[("link", parent, dataset_id)] = parent
    if placement.metadata is not None:
        created |= _add_metadata(db, "dataset", dataset_id, placement.metadata)
    file_id = None
    if placement.as_file:
        file_id, new = _add_file(db, dataset_id, item)
        created |= new
        if item.file_metadata is not None:
            created |= _add_metadata(db, "file", file_id, clean_metadata_keys(item.file_metadata))
    return IngestResult(
        dataset_id=str(dataset_id),
        file_id=None if file_id is None else str(file_id),
        collection_ids=tuple(str(c) for c in collection_ids),
        created=created,
        warning=placement.warning,
    )


def _remembered(
    known: dict[tuple[object, ...], int],
    what: tuple[object, ...],
    db: sqlite3.Connection,
    insert: str,
    insert_params: tuple[object, ...],
    select: str,
    select_params: tuple[object, ...],
) -> tuple[int, bool]:
    """``_get_or_create``, unless this transaction already knows the id (then nothing is new)."""
    if what in known:
        return known[what], False
    row_id, new = _get_or_create(db, insert, insert_params, select, select_params)
    known[what] = row_id
    return row_id, new


def _refused(item: IngestItem, exc: sqlite3.DatabaseError) -> CatalogPermanentError:
    return CatalogPermanentError(f"local catalog refused {item.key}: {exc}")


def _add_file(db: sqlite3.Connection, dataset_id: int, item: IngestItem) -> tuple[int, bool]:
    return _get_or_create(
        db,
        "INSERT OR IGNORE INTO files (dataset_id, name, path, size, checksum, file_key, created_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (dataset_id, item.file_name, item.file_path, item.size, item.checksum, item.key, _now_ms()),
        "SELECT id FROM files WHERE dataset_id = ? AND name = ?",
        (dataset_id, item.file_name),
    )


def _add_metadata(
    db: sqlite3.Connection, target_type: str, target_id: int, content: Mapping[str, Any]
) -> bool:
    text = json.dumps(content, sort_keys=True, ensure_ascii=False)
    cur = db.execute(
        "INSERT OR IGNORE INTO metadata (target_type, target_id, content, content_hash, created_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        (target_type, target_id, text, content_hash(content), _now_ms()),
    )
    return cur.rowcount == 1


def _get_or_create(
    db: sqlite3.Connection,
    insert: str,
    insert_params: tuple[object, ...],
    select: str,
    select_params: tuple[object, ...],
) -> tuple[int, bool]:
    cur = db.execute(insert, insert_params)
    if cur.rowcount == 1 and cur.lastrowid is not None:
        return cur.lastrowid, True
    row = db.execute(select, select_params).fetchone()
    if row is None:
        raise CatalogPermanentError(f"local catalog lost a row for {select_params!r}")
    return int(row[0]), False


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken up front so two writers never deadlock on an upgrade."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
