"""The state keeper's working copy of files.state: each key's latest FileState.

A row holds the key, its state name (indexed, for counting), when it last changed, and the
FileState exactly as files.state holds it: the bytes of the record the keeper produced (or read,
when catching up). Nothing is encoded for the copy: a flush writes bytes the keeper already has,
and a catch-up reads only the head of each record (:data:`~consumers.state.view.HEAD_ENDS_AT`)
for the columns. A state is decoded only when the keeper reads it back, which it does for a
file it no longer holds in memory, and then all but its history, which stays the record's bytes
(:meth:`~schemas.codec.Codec.decode_keeping`): the next state of the file is written with them as
they are, so however long a history grows, it is neither decoded nor encoded again on the way.
The codec resolves the record's schema by its fingerprint, so a copy written by an earlier
release of the schema reads as files.state does (decoded whole).

Offsets are kept as the status index keeps them: :meth:`KeeperStore.apply` writes rows and the
next offset of each partition in one transaction, skips records below a stored offset, and a
catch-up resumes from there. A file written by an earlier release (another layout) is emptied on open,
so the keeper rebuilds it from files.state. Files settled before the retention window leave the
copy (see :mod:`consumers.state.retention`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from consumers.state.retention import Retention
from consumers.state.sqlite_file import (
    SETTLED_ROW,
    SqliteFile,
    StatusIndexCorruptError,
    guarded,
    unapplied,
)
from consumers.state.view import HEAD_ENDS_AT, TopicFollower
from schemas.codec import Codec, CodecError
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import client_config
from terra_xfer.reading import open_transactions
from terra_xfer.stages.spec import Alive, Waiting, unheard, unwatched

log = logging.getLogger(__name__)
SETTLE_S = 30.0  # a dead writer's open transaction is aborted after transaction.timeout.ms

LAYOUT = 6  # PRAGMA user_version of this layout; the status index's layout is 1
SCHEMA = """
CREATE TABLE kept (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, updated_ms INTEGER NOT NULL, value BLOB NOT NULL
);
CREATE TABLE kept_offsets (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);
"""
_INDEXES = {
    "kept_state": "CREATE INDEX IF NOT EXISTS kept_state ON kept(state)",
    "kept_settled": f"CREATE INDEX IF NOT EXISTS kept_settled ON kept(updated_ms) WHERE {SETTLED_ROW}",
}
_OLD_TABLES = ("files", "meta", "kept", "kept_offsets")
_UPSERT = (
    "INSERT INTO kept (key, state, updated_ms, value) VALUES (?, ?, ?, ?) ON CONFLICT(key)"
    " DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms,"
    " value = excluded.value"
)
_PRUNE = f"DELETE FROM kept INDEXED BY kept_settled WHERE {SETTLED_ROW} AND updated_ms < ?"
_SAVE_OFFSET = (
    "INSERT INTO kept_offsets (partition, next_offset) VALUES (?, ?) ON CONFLICT(partition)"
    " DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)"
)
_KEYS_PER_QUERY = 500

State = dict[str, Any]
# One files.state record the keeper wrote: partition, offset, key, the FileState and its bytes.
KeptRecord = tuple[int, int, str, State, bytes]


class Encoded(NamedTuple):
    """A FileState as files.state holds it: its state and time of change (the row's columns) and
    the record's bytes."""

    state: str
    updated_ms: int
    raw: bytes

    @classmethod
    def of(cls, state: Mapping[str, Any], raw: bytes) -> Encoded:
        return cls(str(state["state"]), int(state["updated_ms"]), raw)


# One written to the copy: partition, offset, key and the record, or None for a file the copy
# lets go (see consumers.state.retention).
CopiedRecord = tuple[int, int, str, Encoded | None]


class KeeperStore(SqliteFile):
    """The on-disk copy; one keeper, one thread at a time (it may move between threads)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__(path, busy_timeout_s)
        self.codec = Codec()
        try:
            with guarded(self.path):
                (layout,) = self._db.execute("PRAGMA user_version").fetchone()
                if layout != LAYOUT:
                    self._create()
                with self._transaction():
                    self._make_indexes()
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

    HOLDS_ANYTHING = "SELECT EXISTS (SELECT 1 FROM kept) OR EXISTS (SELECT 1 FROM kept_offsets)"
    _LAYOUT = LAYOUT

    def _secondary_indexes(self) -> list[str]:
        return list(_INDEXES)

    def _make_indexes(self) -> None:
        for create in _INDEXES.values():
            self._db.execute(create)

    def offsets(self) -> dict[int, int]:
        """The next files.state offset to read, per partition."""
        with guarded(self.path):
            rows = self._db.execute("SELECT partition, next_offset FROM kept_offsets").fetchall()
        return {int(p): int(o) for p, o in rows}

    def apply(self, records: Iterable[CopiedRecord]) -> int:
        """Write records and their offsets in one transaction; returns how many were applied.

        A record below its partition's stored offset was applied before and is skipped; of a
        key's records only the last is written, which is what its row holds either way. A record
        of None removes its key's row.
        """
        with guarded(self.path), self._transaction():
            stored = dict(self._db.execute("SELECT * FROM kept_offsets").fetchall())
            latest, reached, applied = unapplied(records, stored)
            gone = [(k,) for k, v in latest.items() if v is None]
            self._db.executemany("DELETE FROM kept WHERE key = ?", gone)
            rows = [(k, v.state, v.updated_ms, v.raw) for k, v in latest.items() if v is not None]
            self._db.executemany(_UPSERT, rows)
            self._db.executemany(_SAVE_OFFSET, reached.items())
        return applied

    def get(self, key: str) -> State | None:
        """The FileState of ``key``, or None when the copy holds no row for it."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, State]:
        """The FileState of each key among ``keys`` the copy holds (unknown keys are left out)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, State] = {}
        with guarded(self.path):
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                chunk = wanted[start : start + _KEYS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT key, value FROM kept WHERE key IN ({marks})"
                for key, value in self._db.execute(sql, chunk):
                    found[key] = self._decoded(key, value)
        return found

    def prune(self, before_ms: int) -> int:
        """Remove the rows of files settled before ``before_ms``; how many."""
        with guarded(self.path), self._transaction():
            return self._db.execute(_PRUNE, (before_ms,)).rowcount

    def counts_by_state(self) -> dict[str, int]:
        with guarded(self.path):
            rows = self._db.execute("SELECT state, COUNT(*) FROM kept GROUP BY state").fetchall()
        return {str(s): int(n) for s, n in rows}

    def _decoded(self, key: str, value: bytes) -> State:
        """The state of ``key`` from its row: its history kept as the record's bytes (written
        again as they are with the next state, decoded only if the fold looks into it)."""
        try:
            record, state = self.codec.decode_keeping(value, HEAD_ENDS_AT)
            if record != "FileState":
                raise CodecError(f"a {record} record, not a FileState")
            return state
        except (CodecError, TypeError) as exc:  # only the keeper writes here
            raise StatusIndexCorruptError(
                f"{self.path}: the state of {key!r} is unreadable ({exc}); delete the file to"
                " rebuild it from files.state"
            ) from exc


class KeeperCopy(TopicFollower):
    """files.state followed into a :class:`KeeperStore`: how the keeper catches its copy up."""

    store_name = "state-keeper"

    def __init__(
        self,
        config: Config,
        path: Path,
        retention: Retention | None = None,
        progress: Waiting = unheard,
        alive: Alive = unwatched,
    ) -> None:
        super().__init__(config, retention, progress, alive)
        self.store = KeeperStore(path)
        self._admin: AdminClient | None = None

    def _file(self) -> SqliteFile:
        return self.store

    def settle(self, partitions: Collection[int], timeout_s: float = SETTLE_S) -> None:
        """Return once no transaction is open on ``partitions`` of files.state.

        A catch-up reads each partition up to its last stable offset. Before a keeper folds the
        files of a partition it was just given, every transaction of the partition's previous
        owner must have ended *and be visible*: committed or aborted, markers written. One that
        is still open (a frozen or dead keeper, or commit markers not yet written) would hide
        states the catch-up must see. Raises :class:`TransientError`, naming the partition, when
        one stays open for ``timeout_s`` (a dead writer's is aborted by the broker after its
        transaction timeout; a hanging one needs ``terra-xfer kafka-tool transactions``).
        """
        deadline = time.monotonic() + timeout_s
        delay, told = 0.02, False
        while True:
            open_ = self.open_transactions(partitions)
            if not open_:
                if told:
                    log.info("%s: no transaction open on the partitions now held", self.topic)
                return
            p, (stable, end) = min(open_.items())
            why = (
                f"{self.topic}[{p}] holds a transaction still open (stable offset {stable},"
                f" end {end}) by a writer that held the partition before"
            )
            if time.monotonic() + delay > deadline:
                raise TransientError(
                    f"{why}; waited {timeout_s:.0f} s for it to end (when it hangs: terra-xfer"
                    " kafka-tool transactions)"
                )
            if not told:
                log.warning("%s: waiting for it to end before folding", why)
                told = True
            time.sleep(delay)  # backoff while the broker ends or times out that transaction
            delay = min(delay * 2, 1.0)

    def open_transactions(self, partitions: Collection[int]) -> dict[int, tuple[int, int]]:
        """Partitions of files.state among ``partitions`` whose last stable offset is below their
        end (a transaction is open on them), with both offsets."""
        if not partitions:
            return {}
        if self._admin is None:
            self._admin = AdminClient(client_config(self.config.kafka))
        try:
            held = open_transactions(
                self._admin, (TopicPartition(self.topic, p) for p in partitions)
            )
        except KafkaException as exc:
            # A client that knew the cluster before a broker restart may keep asking with stale
            # leader epochs (FENCED_LEADER_EPOCH) for ever: the next attempt starts afresh.
            self._admin = None
            raise TransientError(f"listing the offsets of {self.topic}: {exc}") from exc
        return {tp.partition: offsets for tp, offsets in sorted(held.items(), key=_partition)}

    def _stored_offsets(self) -> dict[int, int]:
        return self.store.offsets()

    def _prune_before(self, cutoff_ms: int) -> int:
        return self.store.prune(cutoff_ms)

    def _apply(self, messages: list[Message]) -> int:
        records: list[CopiedRecord] = []
        cutoff = self._cutoff_ms()
        for msg in messages:
            value = msg.value()
            if value is None:
                continue  # the keeper writes no tombstones; nothing else belongs here
            try:
                record, head = self.codec.decode_head(value, HEAD_ENDS_AT)
            except CodecError:
                continue
            if record != "FileState":
                continue
            key = (msg.key() or b"").decode("utf-8", "backslashreplace")
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            kept = Encoded.of(head, value) if self._kept(head, cutoff) else None
            records.append((partition, offset, key, kept))
        return self.store.apply(records) if records else 0

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.store.close()


def _partition(item: tuple[TopicPartition, Any]) -> int:
    return item[0].partition
