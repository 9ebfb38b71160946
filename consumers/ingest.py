"""Ingest: registers every transferred file in the catalog (Clowder, or the local SQLite catalog).

Consumes files.transferred. Gantry files are named from their path in the cache; a Danforth
file (``[danforth] site``) goes into its snapshot's dataset, named from the snapshot metadata its
event carries, which is attached to the dataset before the file (so whichever file of a snapshot
comes first, the dataset has its metadata), with an image's own metadata on the image
(:mod:`consumers.catalog.entries`).

The catalog call is the side effect, done before the transaction that records the file's
FileIngested (with the catalog's warning when it registered the file differently from the usual
way, as a ``*_metadata.json`` that could not be read) or final FileIngestFailed (with the reason,
when the catalog refuses it) and the consumed offsets; it is idempotent (get-or-create by exact
name, a file already in its dataset is skipped), so a replay or a retry after a crash adds
nothing.

Each file has its own outcome. A file whose catalog call failed transiently is held in memory and
tried again after a backoff with jitter, while the files after it go on; offsets are committed
per partition only up to the oldest file still held (:mod:`consumers.ingest_retries`), so a
restart reads it again. While the catalog's circuit breaker holds its requests back
(:class:`~consumers.catalog.base.CatalogUnavailable`), no file is sent until it says; that is no
failed attempt of the file. A step spends at most ``budget_s`` on catalog calls, so the host's
stop signal, checked between steps, is honoured within seconds whatever the catalog does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Message, TopicPartition

from consumers.catalog.base import (
    Catalog,
    CatalogUnavailable,
    IngestItem,
    Outcome,
    ingest_each,
)
from consumers.catalog.entries import danforth_item, gantry_item
from consumers.ingest_retries import Held, HeldItems, RetrySchedule
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError, TransientError, failure_cause
from terra_xfer.sites.cache import Sites
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.outputs import Decoded, Output, now_ms
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import FILES_INGESTED, FILES_TRANSFERRED

log = logging.getLogger(__name__)
# The local catalog files a whole chunk in one transaction, so larger calls cost less per file; a
# remote catalog registers file by file, so the step's time is checked between files.
CALL_SIZE = {"local": 1000}
READ_SIZE = {"local": 1000}
REMOTE_READ_SIZE = 200
MAX_HELD = 5000  # beyond this many unfinished files, the partitions are paused
STEP_BUDGET_S = 2.0
POLL_S = 0.5


class Ingest:
    """One ingest worker (its own consumer group on files.transferred)."""

    def __init__(
        self,
        config: Config,
        spec: StageSpec,
        catalog: Catalog,
        *,
        clock: Callable[[], float] = time.monotonic,
        schedule: RetrySchedule | None = None,
        max_held: int = MAX_HELD,
        budget_s: float = STEP_BUDGET_S,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.sites = Sites(config)
        self.rules = self.sites.gantry_rules
        self.kafka = StageKafka(config, spec)
        self.codec = self.kafka.codec
        self.topic = config.topic(FILES_TRANSFERRED)
        self.clock = clock
        self.held = HeldItems(schedule)
        self.call_size = CALL_SIZE.get(catalog.name, 1)
        self.read_size = READ_SIZE.get(catalog.name, REMOTE_READ_SIZE)
        self.max_held = max_held
        self.budget_s = budget_s
        self.ingested = 0
        self._paused = False
        self._quiet_until = 0.0  # no catalog call before this: its breaker holds requests back
        self._held_back: CatalogUnavailable | None = None

    def step(self) -> int:
        """Take new files, make the catalog calls that are due, commit what finished; return the
        messages consumed plus the held files finished (0 when idle or only waiting).

        While the catalog holds its requests back, the step raises its
        :class:`CatalogUnavailable` once the step is committed, so the host shows the stage as
        waiting for a service (logged once, counted, its readiness reason) and backs off."""
        self.kafka.start(on_revoke=self._on_revoke, on_rewind=self.held.forget)
        with self.kafka.attempt():
            messages = self._read()
            good, outputs = self.kafka.decode(messages)
            for msg in messages:
                self.held.consumed(_partition(msg), _offset(msg))
            outputs += self._take(good)
            finished, retried = self._work()
            outputs += finished
            if messages or outputs:
                offsets = sorted(self.held.offsets().items())
                self.kafka.commit(outputs, [TopicPartition(self.topic, p, o) for p, o in offsets])
        self._show()
        if self._held_back is not None and self.clock() < self._quiet_until:
            raise self._held_back
        return len(messages) + retried

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.held.forget(tp.partition for tp in partitions)

    def _read(self) -> list[Message]:
        """New messages, unless ``max_held`` files are held already: then the assigned partitions
        are paused until some finish (the consumer still polls, so it stays in its group)."""
        consumer = self.kafka.consumer
        assert consumer is not None
        full = len(self.held) >= self.max_held
        if full or self._paused:
            assigned = consumer.assignment()
            if full:
                consumer.pause(assigned)  # again each step: partitions assigned since
            else:
                consumer.resume(assigned)
            self._paused = full
        room = max(1, min(self.read_size, self.max_held - len(self.held)))
        return self.kafka.read(room, self._wait_s())

    def _wait_s(self) -> float:
        """How long to wait for new messages: until the next held file is due and the catalog
        takes calls, at most ``POLL_S``."""
        due = self.held.next_due()
        if due is None:
            return POLL_S
        return min(POLL_S, max(0.0, max(due, self._quiet_until) - self.clock()))

    def _take(self, good: Sequence[Decoded]) -> list[Output]:
        """Hold every transferred file for the catalog; one that cannot be named is refused now
        (a FileTransferFailed needs nothing: the monitor retries the transfer)."""
        now = self.clock()
        outputs = []
        for d in good:
            if d.record != "FileTransferred":
                continue
            try:
                item = self.item(d.value)
            except PermanentError as exc:
                outputs.append(self._outcome(d.value, exc))
                continue
            where = (_partition(d.msg), _offset(d.msg))
            self.held.hold(Held(*where, d.value, item, since=now, due=now))
        return outputs

    def _work(self) -> tuple[list[Output], int]:
        """Catalog calls for the held files that are due, earliest consumed first, while the
        step's budget lasts and the catalog takes calls; their outputs, and how many of them
        had failed before."""
        outputs: list[Output] = []
        retried = 0
        deadline = self.clock() + self.budget_s
        while self.clock() < deadline:
            now = self.clock()
            due = self.held.due(now, self.call_size) if now >= self._quiet_until else []
            if not due:
                break
            self._held_back = None
            outcomes = self._call(due)
            now = self.clock()
            for held, outcome in zip(due, outcomes, strict=True):
                if isinstance(outcome, CatalogUnavailable):
                    self._quiet_until = max(self._quiet_until, now + outcome.retry_after)
                    self._held_back = outcome
                    self.held.postpone(held, self._quiet_until)
                    continue
                if isinstance(outcome, TransientError):
                    outputs += self._retry_later(held, outcome, now)
                    continue
                self.held.finished(held)
                retried += held.failures > 0
                outputs.append(self._outcome(held.event, outcome, held))
        return outputs, retried

    def _call(self, due: Sequence[Held]) -> Sequence[Outcome]:
        """Each item's outcome; a transient error of the whole call is every item's, and a call
        refused as a whole is made again one item at a time, so each item gets its own answer."""
        items = [h.item for h in due]
        try:
            return self.catalog.ingest_many(items)
        except TransientError as exc:
            return [exc] * len(items)
        except PermanentError as exc:
            log.warning("ingest: a call of %d was refused (%s); filing one by one", len(items), exc)
            return ingest_each(self.catalog, items)

    def _retry_later(self, held: Held, exc: TransientError, now: float) -> list[Output]:
        """Hold ``held`` until its next attempt. A new cause is logged, and told to files.state
        as a non-final FileIngestFailed (the file's reason in ``status`` while it waits); the
        same cause again is neither."""
        metrics.INGEST_ATTEMPTS.labels("transient").inc()
        if not self.held.failed(held, now, failure_cause(exc)):
            log.debug("%s: attempt %d failed again: %s", held.event["key"], held.failures, exc)
            return []
        log.warning(
            "%s: not ingested yet (attempt %d; next in %.1f s): %s",
            held.event["key"], held.failures, held.due - now, exc,
        )  # fmt: skip
        event = held.event
        value = {
            "key": event["key"],
            "version": event["version"],
            "catalog": self.catalog.name,
            "emitted_ms": now_ms(),
            "reason": str(exc),
            "attempt": held.failures,
            "final": False,
        }
        topic = self.config.topic(FILES_INGESTED)
        return [Output(topic, event["key"], self.codec.encode("FileIngestFailed", value))]

    def _show(self) -> None:
        """The waiting files as metrics."""
        catalog = self.catalog.name
        metrics.INGEST_WAITING.labels(catalog).set(len(self.held))
        since = self.held.oldest_since()
        metrics.INGEST_OLDEST_WAITING.labels(catalog).set(
            0.0 if since is None else self.clock() - since
        )

    def item(self, event: dict[str, Any]) -> IngestItem:
        """The catalog entry of a transferred file (see :mod:`consumers.catalog.entries`)."""
        root = self.config.transfer.destination_root
        if self.sites.is_danforth(event["key"]):
            return danforth_item(event, root)
        return gantry_item(event, self.rules, root)

    def _outcome(self, event: dict[str, Any], outcome: Outcome, held: Held | None = None) -> Output:
        base = {
            "key": event["key"],
            "version": event["version"],
            "catalog": self.catalog.name,
            "emitted_ms": now_ms(),
        }
        topic = self.config.topic(FILES_INGESTED)
        attempts = 1 if held is None else held.failures + 1
        if isinstance(outcome, PermanentError):
            metrics.INGEST_ATTEMPTS.labels("refused").inc()
            log.error("%s: not ingested: %s", event["key"], outcome)
            value = base | {"reason": str(outcome), "attempt": attempts, "final": True}
            return Output(topic, event["key"], self.codec.encode("FileIngestFailed", value))
        assert not isinstance(outcome, TransientError)
        metrics.INGEST_ATTEMPTS.labels("ingested").inc()
        if attempts > 1:
            log.info("%s: ingested at attempt %d", event["key"], attempts)
        if outcome.warning is not None:
            log.warning("%s: ingested with a warning: %s", event["key"], outcome.warning)
        self.ingested += 1
        sensor = self.sites.sensor(event["key"], event["path"])
        metrics.count_file("ingested", sensor, event["size"])
        value = base | {
            "dataset_id": outcome.dataset_id,
            "file_id": outcome.file_id,
            "collection_ids": list(outcome.collection_ids),
            "created": outcome.created,
            "warning": outcome.warning,
        }
        return Output(topic, event["key"], self.codec.encode("FileIngested", value))

    def close(self) -> None:
        try:
            self.kafka.close()
        finally:
            self.catalog.close()


def _partition(msg: Message) -> int:
    partition = msg.partition()
    assert partition is not None
    return partition


def _offset(msg: Message) -> int:
    offset = msg.offset()
    assert offset is not None
    return offset
