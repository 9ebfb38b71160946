"""One SQLite file kept by one writer thread at a time, as the status index and the state keeper's
copy are: opened in WAL mode (readers never wait for the writer), written in explicit immediate
transactions, and closed with the ``with`` block that opened it."""

from __future__ import annotations

import functools
import json
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from isal import isal_zlib

from consumers.state.fold import SETTLED, UNSETTLED
from schemas.codec import MAGIC, Codec
from terra_xfer.errors import PermanentError, TerraXferError, TransientError

V = TypeVar("V")
PACK_LEVEL = 1  # ISA-L level 1: the size zlib makes at its level 1, in 85% of the write's time
# A row of a settled file, as SQL: one spelling for a partial index and the queries that use it.
SETTLED_ROW = f"state IN ({', '.join(repr(s) for s in sorted(SETTLED))})"
# A row of a file not settled, spelled so that an index on ``state`` reads only those rows.
UNSETTLED_ROW = f"state IN ({', '.join(repr(s) for s in sorted(UNSETTLED))})"


class StatusIndexError(TerraXferError):
    """The status index could not be read or written."""


class StatusIndexBusyError(StatusIndexError, TransientError):
    """The index file is locked or unavailable for now (another writer, disk full): retry later."""


class StatusIndexCorruptError(StatusIndexError, PermanentError):
    """The index file is not a usable database: rebuild it with ``reset()`` or delete the file."""


@contextmanager
def guarded(path: Path) -> Iterator[None]:
    """Turn sqlite3 errors into the index's error tree."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StatusIndexBusyError(f"status index {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StatusIndexCorruptError(f"status index {path}: {exc}") from exc


class SqliteFile:
    """The file's connection (``_db``); subclasses lay out their tables after this opens it.

    An instance may move between threads (a stage is built in one and run in another) but must
    not be used by two at once.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float) -> None:
        self.path = Path(path)
        self._timeout = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._opened()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _connect(self) -> sqlite3.Connection:
        with guarded(self.path):
            return sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )

    def _opened(self) -> sqlite3.Connection:
        """The file's connection, in WAL mode."""
        db = self._connect()
        try:
            with guarded(self.path):
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self) -> None:
        """What each connection needs beyond the file's own layout (SQL functions, say)."""

    # True when the file holds anything (rows or offsets): a new file is bulk loaded
    # (:meth:`loading`) or seeded (:meth:`install`); a peer's empty copy is not handed out.
    HOLDS_ANYTHING = "SELECT 0"
    # PRAGMA user_version of the file's layout: a snapshot of another layout is not installed.
    _LAYOUT = 0

    def _secondary_indexes(self) -> list[str]:
        """The names of the file's secondary indexes (the key's own index is the table's)."""
        return []

    def _make_indexes(self) -> None:
        """Create the secondary indexes the file should have (and drop any it should not)."""

    def holds_anything(self) -> bool:
        with guarded(self.path):
            return bool(self._db.execute(self.HOLDS_ANYTHING).fetchone()[0])

    def check_snapshot(self, snapshot: Path) -> None:
        """Raise ValueError (or sqlite3.Error) unless ``snapshot`` is an intact database of this
        file's layout that holds something: what :meth:`install` may take."""
        db = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
        try:
            (layout,) = db.execute("PRAGMA user_version").fetchone()
            if layout != self._LAYOUT:
                raise ValueError(f"layout {layout}, where this copy has {self._LAYOUT}")
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise ValueError(f"damaged: {'; '.join(problems[:3])}")
            if not db.execute(self.HOLDS_ANYTHING).fetchone()[0]:
                raise ValueError("it holds nothing")
        finally:
            db.close()

    def install(self, snapshot: Path) -> None:
        """Make ``snapshot`` (checked with :meth:`check_snapshot`, on the same file system) this
        file, which must hold nothing: it takes the file's place, and is opened as the file was.
        Moved, not copied: SQLite's backup into the open file writes it twice (its log, then the
        file), 14 s for a million files of the state keeper's, against a rename."""
        if self.holds_anything():
            raise StatusIndexError(f"{self.path} holds rows already: a snapshot would replace them")
        self._db.close()
        for leftover in ("-wal", "-shm"):  # the empty file's; a crash here leaves it empty
            self.path.with_name(self.path.name + leftover).unlink(missing_ok=True)
        snapshot.replace(self.path)
        self._db = self._opened()
        self._prepare()
        with guarded(self.path), self._transaction():
            self._make_indexes()

    @contextmanager
    def loading(self) -> Iterator[None]:
        """Around a catch-up: when the file is new (no row, no offset), it is filled from the
        start of files.state without its secondary indexes, which are built once at the end
        (sorted, instead of updated row by row at every write), as a bulk load is done.

        Meanwhile queries read the tables whole; a file that holds anything is left as it is.
        The indexes are made again whatever ends the load, and on every open (a process killed
        during the load leaves none behind), so only the load itself ever goes without them.
        """
        if self.holds_anything():
            yield
            return
        with guarded(self.path), self._transaction():
            for name in self._secondary_indexes():
                self._db.execute(f"DROP INDEX IF EXISTS {name}")
        try:
            yield
        finally:
            with guarded(self.path), self._transaction():
                self._make_indexes()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise


def unapplied(
    records: Iterable[tuple[int, int, str, V]], stored: Mapping[int, int]
) -> tuple[dict[str, V], dict[int, int], int]:
    """Of consumed (partition, offset, key, value) records, those at or past ``stored`` (the next
    offset already applied, per partition): the last value of each key, the next offset each
    partition reaches, and how many records that is. Records below a stored offset were applied
    before; of a key's records only the last matters, as it is what the row holds either way."""
    latest: dict[str, V] = {}
    reached: dict[int, int] = {}
    applied = 0
    for partition, offset, key, value in records:
        if offset < stored.get(partition, 0):
            continue
        latest[key] = value
        if offset >= reached.get(partition, 0):
            reached[partition] = offset + 1
        applied += 1
    return latest, reached, applied


def packed(record: bytes) -> bytes:
    """A FileState as stored in a row: the files.state record's own bytes (Avro, as the state
    keeper wrote it), compressed: nothing is decoded or encoded for it, and it is smaller than the
    compact JSON earlier indexes stored (631 bytes a record against 720).

    The stream is zlib's format, made by ISA-L (``isal``), which deflates a record in about half
    the time zlib takes (compressing was 38% of the indexer's CPU with zlib); any zlib reads it."""
    return isal_zlib.compress(record, PACK_LEVEL)


def unpacked(value: bytes | str) -> dict[str, Any]:
    """The FileState of a row's stored value: :func:`packed`, or compact JSON, compressed or
    plain, as earlier status indexes stored it; raises CodecError, ValueError or zlib.error when
    it is none of these."""
    text = zlib.decompress(value) if isinstance(value, bytes) else value.encode()
    if text[: len(MAGIC)] == MAGIC:
        return state_codec().decode(text)[1]
    state: dict[str, Any] = json.loads(text)
    return state


@functools.cache
def state_codec() -> Codec:
    return Codec()
