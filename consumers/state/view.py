"""Following the compacted files.state topic into an on-disk StatusIndex.

The index stores, with its rows, the next offset of each partition it has applied, so following is
incremental: a new process opens the index and reads only what was written since. A missing index
file is simply rebuilt from the beginning of the topic (compaction keeps it small).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from consumers.state.fold import needs_requeue, transferred
from consumers.state.retention import Retention
from consumers.state.seed_copy import seed_copy
from consumers.state.sqlite_file import SqliteFile
from consumers.state.status_index import Recorded, StateRecord, StatusIndex, StatusIndexError
from schemas.codec import Codec, CodecError
from terra_xfer import metrics, seeding
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import make_consumer
from terra_xfer.stages.spec import Alive, Waiting, unheard, unwatched
from terra_xfer.topics import FILES_STATE

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0  # a catch-up that lasts says how far it is this often
HEAD_ENDS_AT = "history"  # a FileState's columns are all among the fields before this one


class TopicFollower:
    """Reads files.state from stored offsets and hands what it reads to :meth:`_apply`.

    Of each consumed batch only the last record of each key is handed on: on a compacted topic of
    whole states it is all the key's row holds after the batch, and the offsets still advance past
    all (a key's records share a partition, so its last has the highest offset of them).

    With a ``retention`` (see :mod:`consumers.state.retention`), a record of a file settled before
    the window is applied as a tombstone (its row goes, or is never written), and the rows of
    files that settle while the copy is kept go at :meth:`prune`.

    A copy that holds nothing is seeded from a peer's at its first catch-up when ``[status]
    seed_from`` names any (:meth:`seed`), and a copy that has caught up is offered to peers
    (:mod:`terra_xfer.seeding`).
    """

    store_name = "files.state"  # how metrics and logs name this copy

    def __init__(
        self,
        config: Config,
        retention: Retention | None = None,
        progress: Waiting = unheard,
        alive: Alive = unwatched,
    ) -> None:
        """``progress``: where a long catch-up says how far it is (readiness); ``alive``: where
        it says, at every read that brought records, that it reads on (the stall guard)."""
        self.config = config
        self.retention = retention
        self.progress = progress
        self.alive = alive
        self.topic = config.topic(FILES_STATE)
        self.codec = Codec()
        self._consumer: Any = None
        self._partitions: list[int] = []
        self._seeded = False  # a peer's copy is asked for at most once (see seed)
        self._offered = False  # and this copy offered to peers once it has caught up

    def _file(self) -> SqliteFile:
        """The SQLite file this copy is kept in."""
        raise NotImplementedError

    def _stored_offsets(self) -> dict[int, int]:
        raise NotImplementedError

    def _apply(self, messages: list[Message]) -> int:
        """Write ``messages`` (at most one per key) and their offsets; return how many applied."""
        raise NotImplementedError

    def _offer(self) -> None:
        """Let peers seed their copies from this one (``GET /copy/NAME`` on the metrics port):
        from its first catch-up on, so that a copy still being seeded or rebuilt is never given."""
        copy = self._file()
        seeding.offer(self.store_name, seeding.Offered(copy.path, self.topic, copy.HOLDS_ANYTHING))

    def seed(self) -> bool:
        """When the copy holds nothing, install a peer's snapshot of its copy ([status]
        seed_from), so that the catch-up reads only what the topic gained since; whether it did.
        Asked once, by the first catch-up (which the batcher and the state keeper make before
        they join their groups, so that no partition waits on it)."""
        if self._seeded:
            return False
        self._seeded = True
        return seed_copy(
            self._file(),
            self.store_name,
            self.topic,
            self.config.status.seed_from,
            self.progress,
            self.alive,
        )

    def _prune_before(self, cutoff_ms: int) -> int:
        """Remove the rows of files settled before ``cutoff_ms``; how many."""
        raise NotImplementedError

    def _cutoff_ms(self) -> int | None:
        return None if self.retention is None else self.retention.cutoff_ms()

    def _kept(self, state: Mapping[str, Any] | None, cutoff_ms: int | None) -> bool:
        """False for a record this copy lets go (settled before the window)."""
        return state is not None and not (
            self.retention is not None and self.retention.drops(state, cutoff_ms)
        )

    def prune(self) -> int:
        """Let go of the files settled before the window, when a prune is due; how many went."""
        if self.retention is None or not self.retention.due():
            return 0
        cutoff = self.retention.cutoff_ms()
        assert cutoff is not None
        gone = self._prune_before(cutoff)
        metrics.LOCAL_ROWS_PRUNED.labels(self.store_name).inc(gone)
        if gone:
            log.info("%s: %d settled file(s) left the local copy", self.store_name, gone)
        return gone

    def _assign(self, again: bool = False) -> None:
        """Assign every partition at the stored offsets (``again``: with a new consumer, so that
        every end of partition it reports comes from this reading: one kept from an earlier read,
        still queued, would end a catch-up before it has read anything)."""
        if self._consumer is not None and not again:
            return
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._consumer = self._new_consumer()
        stored = self._stored_offsets()
        self._consumer.assign(
            [
                TopicPartition(self.topic, p, stored.get(p, OFFSET_BEGINNING))
                for p in self._partitions
            ]
        )

    def _new_consumer(self) -> Any:
        """A consumer of files.state of its own (no group), and the topic's partitions."""
        consumer = make_consumer(
            self.config.kafka,
            f"terra-xfer-state-view-{uuid.uuid4().hex[:8]}",
            {"enable.partition.eof": True},
        )
        meta = consumer.list_topics(self.topic, timeout=10)
        self._partitions = sorted(meta.topics[self.topic].partitions)
        return consumer

    def refresh(self, max_messages: int = 10_000, timeout_s: float = 0.0) -> int:
        """Apply what is available now (up to ``max_messages``); return how many states were written."""
        self._assign()
        latest: dict[bytes, Message] = {}
        for msg in self._consumer.consume(max_messages, timeout_s):
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise TransientError(f"reading {self.topic}: {msg.error().str()}")
            latest[msg.key() or b""] = msg
        applied = self._apply(list(latest.values())) if latest else 0
        self.prune()
        return applied

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """Apply everything committed up to now: each partition is read until the consumer reports
        its end once (with read_committed, the last stable offset). Records arriving after that
        are applied when they come in the same read, but an end that moves on is not chased: under
        a steady stream of state changes it would never be reached everywhere at once.

        A long read (a copy rebuilt from the whole topic) goes on as long as records come:
        ``timeout_s`` bounds a read that makes no progress. Its progress is logged and told to
        ``progress`` (the stage's readiness) every ``PROGRESS_EVERY_S``."""
        self.seed()
        self._assign(again=True)
        started = time.monotonic()
        with self._file().loading():
            applied, read, told = self._read_to_end(set(self._partitions), timeout_s, started)
        if told:
            log.info(
                "%s: caught up with %s: %d records in %.0f s",
                self.store_name,
                self.topic,
                read,
                time.monotonic() - started,
            )
            self.progress(None)
        if not self._offered:
            self._offered = True
            self._offer()
        self.prune()
        return applied

    def _read_to_end(
        self, remaining: set[int], timeout_s: float, started: float
    ) -> tuple[int, int, bool]:
        """catch_up's reads, until every partition in ``remaining`` reported its end; returns
        the records applied and read, and whether the progress was told."""
        applied = read = 0
        told = started
        deadline = started + timeout_s
        while remaining:
            now = time.monotonic()
            if now > deadline:
                raise TransientError(
                    f"catching up with {self.topic} made no progress for {timeout_s:.0f} s"
                )
            if now - told >= PROGRESS_EVERY_S:
                told = now
                self._tell_progress(read, now - started)
            latest: dict[bytes, Message] = {}
            for msg in self._consumer.consume(10_000, 0.5):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                elif err is not None:
                    raise TransientError(f"reading {self.topic}: {err.str()}")
                else:
                    latest[msg.key() or b""] = msg
                    read += 1
            if latest:
                deadline = time.monotonic() + timeout_s
                applied += self._apply(list(latest.values()))
                self.alive()
        return applied, read, told != started

    def _tell_progress(self, read: int, seconds: float) -> None:
        why = (
            f"catching up its copy of {self.topic} ({self.store_name}): {read:,} records read in"
            f" {seconds:.0f} s, {self._behind():,} to go"
        )
        log.info("%s", why)
        self.progress(why)

    def _behind(self) -> int:
        """Records between the consumer's position and the end, over its partitions (cached
        watermarks: no request)."""
        behind = 0
        for tp in self._consumer.position(
            [TopicPartition(self.topic, p) for p in self._partitions]
        ):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                behind += max(0, high - tp.offset)
        return behind

    def close(self) -> None:
        seeding.withdraw(self.store_name, self._file().path)
        if self._consumer is not None:
            self._consumer.close()


class StateFollower(TopicFollower):
    """A read-only view of files.state in a StatusIndex, kept current by :meth:`refresh` /
    :meth:`catch_up`.

    ``records=False``: rows hold their columns only, which is all :meth:`transferred`,
    :meth:`needs_requeue`, counts and queries need (no :meth:`get`); cheaper to keep (the sweeper's).
    ``transferred_only``: the view answers :meth:`transferred` and nothing else, and holds a row
    (columns only) just for files whose current version is at the destination; any other state
    removes its key's row. That is the same answer for a fraction of the writes (the batcher's).
    A full view and one of these may take turns on one file (``up`` and a stage run on its own):
    the rows either writes answer the questions the other asks the same way.
    """

    def __init__(
        self,
        config: Config,
        index_path: Path,
        *,
        records: bool = True,
        transferred_only: bool = False,
        retention: Retention | None = None,
        progress: Waiting = unheard,
        alive: Alive = unwatched,
    ) -> None:
        super().__init__(config, retention, progress, alive)
        self.store_name = index_path.stem
        self.transferred_only = transferred_only
        self.index = StatusIndex(index_path, keep_records=records and not transferred_only)
        # Columns alone come from a FileState's fields before its history: only those are read.
        self._head_only = not self.index.keep_records

    def _file(self) -> SqliteFile:
        return self.index

    def _stored_offsets(self) -> dict[int, int]:
        return self.index.offsets()

    def _apply(self, messages: list[Message]) -> int:
        records = []
        cutoff = self._cutoff_ms()
        for msg in messages:
            try:
                records.append(self._record(msg, cutoff))
            except CodecError:
                continue  # the state keeper is the only writer; nothing else belongs here
        return self.index.apply(records) if records else 0

    def _prune_before(self, cutoff_ms: int) -> int:
        return self.index.prune(cutoff_ms)

    def _record(self, msg: Message, cutoff_ms: int | None = None) -> StateRecord:
        """(partition, offset, key, state) of one files.state message; a transferred-only view
        turns every state that is not at the destination into a tombstone for its key, and any
        view one of a file settled before ``cutoff_ms``."""
        key = (msg.key() or b"").decode("utf-8", "backslashreplace")
        raw = msg.value()
        # The columns come from the fields before the history; a row that keeps the record keeps
        # the bytes as read, so no record is decoded whole.
        head = None if raw is None else self.codec.decode_head(raw, HEAD_ENDS_AT)[1]
        if self.transferred_only and head is not None and not transferred(head):
            head = None
        if not self._kept(head, cutoff_ms):
            head = None
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        if head is None or self._head_only:
            return partition, offset, key, head
        assert raw is not None
        return partition, offset, key, Recorded(head, raw)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.index.get(key)

    def transferred(self, key: str, version: str) -> bool:
        """True when ``version`` of ``key`` already reached the destination (see is_transferred)."""
        row = self.index.summary(key)
        return row is not None and row.version == version and row.transferred

    def transferred_among(self, files: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (key, version) pairs among ``files`` already at the destination, in one lookup."""
        wanted = list(files)
        rows = self.index.summaries(key for key, _version in wanted)
        return {
            (key, version)
            for key, version in wanted
            if (row := rows.get(key)) is not None and row.version == version and row.transferred
        }

    def needs_requeue(self, key: str, version: str) -> bool:
        """True when the sweeper should announce ``version`` of ``key`` (see needs_requeue)."""
        if self.transferred_only:
            raise StatusIndexError(f"{self.index.path} is a transferred-only view")
        row = self.index.summary(key)
        return needs_requeue(None if row is None else row._asdict(), version)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.index.close()
