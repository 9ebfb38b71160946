"""The state keeper's working copy of files.state: each key's latest FileState, as it was written.

A row holds the record's bytes exactly as the keeper produced them (Avro single-object encoding),
with its state name beside them for counting. Nothing is re-encoded to store a state and only the
state is indexed, so a flush costs a fraction of a status index write (no JSON, no report
columns); a record is decoded only when the keeper asks for a key it no longer holds in memory,
and then through the codec, so states written by an older release read with today's defaults.

Offsets are kept as the status index keeps them: :meth:`KeeperStore.apply` writes rows and the
next offset of each partition in one transaction, skips records below a stored offset, and a
catch-up resumes from there. A file written by an earlier release (the status index's layout) is
emptied on open, so the keeper rebuilds it from files.state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from consumers.state_view import TopicFollower
from consumers.status_index import StatusIndexCorruptError, guarded
from schemas.codec import Codec, CodecError
from terra_xfer.config import Config

LAYOUT = 2  # PRAGMA user_version of this layout; the status index's layout is 1
SCHEMA = """
CREATE TABLE kept (key TEXT PRIMARY KEY, state TEXT NOT NULL, value BLOB NOT NULL);
CREATE INDEX kept_state ON kept(state);
CREATE TABLE kept_offsets (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);
"""
_OLD_TABLES = ("files", "meta", "kept", "kept_offsets")
_UPSERT = (
    "INSERT INTO kept (key, state, value) VALUES (?, ?, ?)"
    " ON CONFLICT(key) DO UPDATE SET state = excluded.state, value = excluded.value"
)
_SAVE_OFFSET = (
    "INSERT INTO kept_offsets (partition, next_offset) VALUES (?, ?) ON CONFLICT(partition)"
    " DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)"
)
_KEYS_PER_QUERY = 500

# One written files.state record: partition, offset, key, state name and the record's bytes.
KeptRecord = tuple[int, int, str, str, bytes]


class KeeperStore:
    """The on-disk copy; one keeper, one thread at a time (it may move between threads)."""

    def __init__(self, path: str | Path, codec: Codec, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.codec = codec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            with guarded(self.path):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                (layout,) = self._db.execute("PRAGMA user_version").fetchone()
                if layout != LAYOUT:
                    self._create()
        except BaseException:
            self._db.close()
            raise

    def _create(self) -> None:
        """Start afresh in this layout (whatever an earlier release left is rebuilt from Kafka)."""
        with self._transaction():
            for table in _OLD_TABLES:
                self._db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in filter(str.strip, SCHEMA.split(";")):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {LAYOUT}")

    def __repr__(self) -> str:
        return f"KeeperStore({str(self.path)!r})"

    def __enter__(self) -> KeeperStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def offsets(self) -> dict[int, int]:
        """The next files.state offset to read, per partition."""
        with guarded(self.path):
            rows = self._db.execute("SELECT partition, next_offset FROM kept_offsets").fetchall()
        return {int(p): int(o) for p, o in rows}

    def apply(self, records: Iterable[KeptRecord]) -> int:
        """Write records and their offsets in one transaction; returns how many were applied.

        A record below its partition's stored offset was applied before and is skipped; of a
        key's records only the last is written, which is what its row holds either way.
        """
        with guarded(self.path), self._transaction():
            stored = dict(self._db.execute("SELECT * FROM kept_offsets").fetchall())
            reached: dict[int, int] = {}
            latest: dict[str, tuple[str, str, bytes]] = {}
            applied = 0
            for partition, offset, key, state, value in records:
                if offset < stored.get(partition, 0):
                    continue
                latest[key] = (key, state, value)
                if offset >= reached.get(partition, 0):
                    reached[partition] = offset + 1
                applied += 1
            self._db.executemany(_UPSERT, latest.values())
            self._db.executemany(_SAVE_OFFSET, reached.items())
        return applied

    def get(self, key: str) -> dict[str, Any] | None:
        """The FileState of ``key``, or None when the copy holds no row for it."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The FileState of each key among ``keys`` the copy holds (unknown keys are left out)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        with guarded(self.path):
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                chunk = wanted[start : start + _KEYS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT key, value FROM kept WHERE key IN ({marks})"
                for key, value in self._db.execute(sql, chunk):
                    found[key] = self._decoded(key, value)
        return found

    def counts_by_state(self) -> dict[str, int]:
        with guarded(self.path):
            rows = self._db.execute("SELECT state, COUNT(*) FROM kept GROUP BY state").fetchall()
        return {str(s): int(n) for s, n in rows}

    def _decoded(self, key: str, value: bytes) -> dict[str, Any]:
        try:
            return self.codec.decode(value)[1]
        except CodecError as exc:  # only the keeper writes here, from records it encoded
            raise StatusIndexCorruptError(
                f"{self.path}: the state of {key!r} is unreadable ({exc}); delete the file to"
                " rebuild it from files.state"
            ) from exc

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


class KeeperCopy(TopicFollower):
    """files.state followed into a :class:`KeeperStore`: how the keeper catches its copy up."""

    def __init__(self, config: Config, path: Path) -> None:
        super().__init__(config)
        self.store = KeeperStore(path, self.codec)

    def _stored_offsets(self) -> dict[int, int]:
        return self.store.offsets()

    def _apply(self, messages: list[Message]) -> int:
        records: list[KeptRecord] = []
        for msg in messages:
            value = msg.value()
            if value is None:
                continue  # the keeper writes no tombstones; nothing else belongs here
            try:
                record, state = self.codec.decode(value)
            except CodecError:
                continue
            if record != "FileState":
                continue
            key = (msg.key() or b"").decode("utf-8", "backslashreplace")
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            records.append((partition, offset, key, state["state"], value))
        return self.store.apply(records) if records else 0

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.store.close()
