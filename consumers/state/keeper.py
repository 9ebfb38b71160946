"""The state keeper: the only writer of files.state, folding every file event into its FileState.

It consumes every event topic as one consumer group with the *range* assignor, which hands each
instance the same partition numbers of every topic: with co-partitioned topics (checked at start)
one instance sees all events of the files it owns, so there are no lost updates between instances.

New states are written to Kafka in the same transaction as the consumed offsets. Its working copy of
files.state is an on-disk KeeperStore fronted by :class:`KeptStates`: the states of committed steps
wait in memory and reach the copy together, with the offsets Kafka gave them, in one transaction
per flush; folding reads memory first, then the copy. Only committed states enter memory, so an
aborted step leaves no trace. The copy is never ahead of the topic: after a crash it is behind, and
on every assignment, and after every failed step, the keeper flushes, forgets what it holds in
memory, waits until no transaction (of a previous owner, or its own whose outcome it was not told)
is open on the partitions it now holds, and catches the copy up from files.state, so it always
folds from what the topic holds. A starting keeper also catches its copy up (or seeds it from a
peer's, :mod:`terra_xfer.seeding`) before it joins its group, so that a long read holds no
partition: the one after its assignment reads only what came meanwhile.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from consumers.state.fold import batched, fold
from consumers.state.keeper_store import Encoded, KeeperCopy, KeeperStore, KeptRecord
from consumers.state.retention import Retention
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError, TransientError
from terra_xfer.kafka import where
from terra_xfer.partitioner import partition_of
from terra_xfer.stages.consume_loop import TransactionalLoop
from terra_xfer.stages.outputs import Decoded, Output, dead_letter, now_ms
from terra_xfer.stages.spec import Alive, StageSpec, Waiting, unheard, unwatched
from terra_xfer.topics import (
    FILES_STATE,
)

log = logging.getLogger(__name__)
FLUSH_RECORDS = 20_000  # pending states that make a flush due at once
FLUSH_S = 5.0  # the longest a committed state waits in memory while the keeper is busy
KEEP_STATES = 20_000  # recently written states kept in memory beyond the pending ones
State = dict[str, Any]


class KeptStates:
    """Committed states in memory in front of the working copy; one keeper's, one thread at a time.

    ``pending``: the latest committed record of each key not yet in the copy, with its offset.
    ``recent``: the latest committed state of each key written lately, the oldest dropped beyond
    ``keep`` after a flush (they are in the copy by then). Memory always holds a key's newest state
    whenever it holds one, because only this keeper writes its keys between two assignments.
    """

    def __init__(
        self,
        store: KeeperStore,
        *,
        flush_records: int = FLUSH_RECORDS,
        flush_s: float = FLUSH_S,
        keep: int = KEEP_STATES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.flush_records = flush_records
        self.flush_s = flush_s
        self.keep = keep
        self.clock = clock
        self.pending: dict[str, KeptRecord] = {}
        self.recent: dict[str, State] = {}
        self._oldest: float | None = None

    def lookup(self, keys: Iterable[str]) -> dict[str, State]:
        """The current state of every known key among ``keys``: from memory, else from the copy."""
        found: dict[str, State] = {}
        missing = []
        for key in keys:
            state = self.recent.get(key)
            if state is None:
                missing.append(key)
            else:
                found[key] = state
        if missing:
            found.update(self.store.get_many(missing))
        return found

    def committed(self, records: Iterable[KeptRecord]) -> None:
        """Take the states a committed step wrote (partition, offset, key, state, its bytes)."""
        for record in records:
            key, state = record[2], record[3]
            self.pending[key] = record
            self.recent.pop(key, None)  # re-inserted last: the dict runs oldest write first
            self.recent[key] = dict(state)  # shallow: fold never changes a state in place
            if self._oldest is None:
                self._oldest = self.clock()

    def due(self) -> bool:
        """True when the pending states should be written now."""
        if self._oldest is None:
            return False
        return (
            len(self.pending) >= self.flush_records or self.clock() - self._oldest >= self.flush_s
        )

    def flush(self) -> int:
        """Write every pending state to the copy in one transaction; returns how many.

        On failure nothing is forgotten: the same states are written by the next flush.
        """
        written = len(self.pending)
        if self.pending:
            self.store.apply(
                [
                    (p, o, key, Encoded.of(state, raw))
                    for p, o, key, state, raw in self.pending.values()
                ]
            )
            self.pending.clear()
            self._oldest = None
        excess = len(self.recent) - self.keep
        if excess > 0:
            for key in list(itertools.islice(self.recent, excess)):
                del self.recent[key]
        return written

    def forget(self) -> None:
        """Flush, then drop every state from memory (the copy is read afresh from now on)."""
        self.flush()
        self.recent.clear()


class StateKeeper:
    """One state keeper instance."""

    def __init__(
        self,
        config: Config,
        spec: StageSpec,
        progress: Waiting = unheard,
        alive: Alive = unwatched,
    ) -> None:
        """``progress``: where a long catch-up of the copy says how far it is (readiness);
        ``alive``: where it says it reads on (the stall guard)."""
        self.config = config
        self.spec = spec
        self.copy = KeeperCopy(
            config, config.status.keeper_path, Retention.of(config), progress, alive
        )
        self.loop = TransactionalLoop(
            config,
            spec,
            self._handle,
            batch_size=2000,
            consumer_overrides={"partition.assignment.strategy": "range"},
            on_assign=self._on_assign,
            on_commit=self._on_commit,
            on_rewind=self._on_rewind,
        )
        self.kept = KeptStates(self.copy.store)
        self.partitions = 0  # of every input topic and files.state (checked equal)
        self._stale = True  # the copy must catch up before the next fold
        self._joined = False  # the first step catches the copy up before joining the group
        self._written: list[KeptRecord] = []
        self._produced = 0
        self.states_written = 0

    def _check_partitions(self) -> None:
        if self.partitions:
            return
        names = [self.config.topic(t) for t in (*self.spec.inputs, FILES_STATE)]
        try:
            meta = self.loop.consumer.list_topics(timeout=10)
        except KafkaException as exc:
            raise TransientError(f"listing the topics: {exc}") from exc
        counts = {n: len(meta.topics[n].partitions) for n in names if n in meta.topics}
        missing = [n for n in names if n not in counts]
        if missing:
            raise PermanentError(
                f"topics missing: {', '.join(missing)} (run terra-xfer topics create)"
            )
        if len(set(counts.values())) != 1:
            raise PermanentError(f"the state keeper needs co-partitioned topics; found {counts}")
        self.partitions = counts[names[0]]

    def _on_assign(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        """New partitions: the copy catches up from files.state before the next fold.

        Not here but once the first messages of the assignment are in hand: their offsets were
        fetched stable (read_committed), so a transaction of the partitions' previous owner still
        open now has ended by then, and its states are in files.state for the catch-up to read.
        """
        self.kept.forget()
        self._stale = True

    def _on_rewind(self) -> None:
        """A failed step: what it wrote may yet be in files.state (a commit whose answer was lost
        can have committed), so the keeper folds from the topic again, not from its memory."""
        self._stale = True

    def _fresh(self) -> None:
        """Catch the copy up before the first fold of an assignment: once the previous owners'
        transactions on the partitions now held have ended (:meth:`KeeperCopy.settle`), files.state
        holds everything they wrote, and the copy reads it all."""
        if self._stale:
            self.kept.forget()
            self.copy.settle({tp.partition for tp in self.loop.consumer.assignment()})
            self.copy.catch_up()
            self._stale = False

    def step(self) -> int:
        self._check_partitions()
        if not self._joined:
            # Before it joins its group, so that no partition waits on it: the copy is seeded
            # from a peer's when it is new, or caught up from what it stored. The catch-up after
            # the assignment then reads only the last seconds; until then the other replicas
            # keep folding every partition.
            self.copy.catch_up()
            self._joined = True
        self._written, self._produced = [], 0
        handled = self.loop.step()
        if not handled and self._stale and self.loop.consumer.assignment():
            self._fresh()  # caught up while idle: the first event after a restart waits for nothing
        if not handled or self.kept.due():
            self.kept.flush()
            self.copy.prune()
        return handled

    def _on_commit(self) -> None:
        """The step's states are in files.state: they become the keeper's current states."""
        written, self._written = self._written, []
        self.kept.committed(written)
        self.states_written += len(written)
        if len(written) != self._produced:  # a state without its delivery report: read the topic
            log.error(
                "%d states committed, %d reported: re-reading files.state",
                self._produced,
                len(written),
            )
            self._stale = True

    def _handle(self, batch: Sequence[Decoded]) -> list[Output]:
        self._fresh()
        now = now_ms()
        owned, refused = self._owned(self._in_pipeline_order(batch))
        states = self.kept.lookup(_keys(owned))
        changed: dict[str, State] = {}
        for d in owned:
            try:
                for key, new in _folded(d, states.get, now):
                    states[key] = changed[key] = new
            except PermanentError as exc:
                refused.append(self._refuse(d, f"cannot fold {d.record}: {exc}"))
        self._produced = len(changed)
        topic = self.config.topic(FILES_STATE)
        outputs = refused
        for key, state in changed.items():
            raw = self.loop.codec.encode("FileState", state)
            outputs.append(Output(topic, key, raw, on_delivery=self._delivered(key, state, raw)))
        return outputs

    def _in_pipeline_order(self, batch: Sequence[Decoded]) -> list[Decoded]:
        """``batch`` with arrivals first, then batches, transfers, ingestion and deletion (each
        topic's messages in the order read): one consumer reads the five topics at their own
        pace, and folding in the order things happen keeps each history in that order too. The
        states do not depend on it (the fold is order-free); only the histories' order does."""
        rank = {self.config.topic(t): i for i, t in enumerate(self.spec.inputs)}
        return sorted(batch, key=lambda d: rank.get(d.msg.topic() or "", len(rank)))

    def _owned(self, batch: Sequence[Decoded]) -> tuple[list[Decoded], list[Output]]:
        """The events whose every file this keeper owns (its key lands on the partition the event
        was read from), and a dead letter for each other one: folding a file owned by another
        keeper would build its state from a copy that is not the file's latest."""
        owned: list[Decoded] = []
        refused: list[Output] = []
        for d in batch:
            here = d.msg.partition()
            strays = [k for k in _event_keys(d) if partition_of(k, self.partitions) != here]
            if not strays:
                owned.append(d)
                continue
            reason = (
                f"{d.record} on partition {here} names {len(strays)} file(s) owned by another "
                f"partition (e.g. {strays[0]!r} is on {partition_of(strays[0], self.partitions)}); "
                "not folded"
            )
            refused.append(self._refuse(d, reason))
        return owned, refused

    def _refuse(self, d: Decoded, reason: str) -> Output:
        log.error("%s: %s", where(d.msg), reason)
        return dead_letter(self.config, self.loop.codec, self.spec.name, reason, d.msg)

    def _delivered(self, key: str, state: State, raw: bytes) -> Any:
        def record(msg: Message) -> None:
            p, o = msg.partition(), msg.offset()
            assert p is not None and o is not None
            self._written.append((p, o, key, state, raw))

        return record

    def close(self) -> None:
        try:
            self.kept.flush()
        except Exception:  # the copy catches up from files.state at the next start
            log.exception("state keeper: writing the working copy at close failed")
        try:
            self.loop.close()
        finally:
            self.copy.close()


def _event_keys(d: Decoded) -> list[str]:
    """The file keys one event touches (a BatchSubmitted touches each of its files)."""
    if d.record == "BatchSubmitted":
        return [f["key"] for f in d.value["files"]]
    return [d.value["key"]]


def _keys(batch: Sequence[Decoded]) -> list[str]:
    """The file keys a batch of events touches."""
    return [key for d in batch for key in _event_keys(d)]


def _folded(
    d: Decoded, current: Callable[[str], State | None], now: int
) -> Iterator[tuple[str, State]]:
    """The (key, new state) pairs one event yields, each folded onto ``current`` as it is then.

    A generator: the caller records each pair before the next is folded, so a batch listing one
    key twice folds the second entry onto the first.
    """
    if d.record != "BatchSubmitted":
        new = fold(current(d.value["key"]), d.record, d.value, now)
        if new is not None:
            yield d.value["key"], new
        return
    task_id, emitted_ms = d.value.get("task_id"), d.value["emitted_ms"]
    for f in d.value["files"]:
        new = batched(
            current(f["key"]), f, d.value["batch_id"], task_id, now, emitted_ms=emitted_ms
        )
        if new is not None:
            yield f["key"], new
