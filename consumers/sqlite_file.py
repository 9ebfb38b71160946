"""One SQLite file kept by one writer thread at a time, as the status index and the state keeper's
copy are: opened in WAL mode (readers never wait for the writer), written in explicit immediate
transactions, and closed with the ``with`` block that opened it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from terra_xfer.errors import PermanentError, TerraXferError, TransientError


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
        self._db = self._connect()
        try:
            with guarded(self.path):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            self._db.close()
            raise

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
