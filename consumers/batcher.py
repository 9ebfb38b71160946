"""The batcher: windows files.arrived into transfer batches and submits each one, idempotently.

Per batch, in this order:
1. one Kafka transaction records the batch as PREPARED (with the submission id the backend issued)
   together with the consumed offsets of its window, so a batch is formed exactly once;
2. the batch is submitted under that submission id (a repeated submit runs it once);
3. a second transaction records it as SUBMITTED with the task id.
A crash between 1 and 3 leaves a PREPARED batch: the monitor submits it again under the same id, which
the backend accepts once, so no batch is lost and none runs twice.

Back-pressure: while ``max_pending_tasks`` submitted tasks are not final, the batcher pauses its
partitions (it keeps polling, so it stays in the group) and forms no new batch.

Idle transfers: while fewer than ``idle_tasks`` of its tasks are running and it has read all
there was to read, the batcher closes its open windows at once instead of waiting for them to
fill or age (as Nagle's algorithm sends at once on an idle link): holding files back then only
delays them. While that many tasks run, windows grow, and each task carries more files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import Consumer, Message, TopicPartition

from consumers.batch_records import batch_record, transfer_items
from consumers.batch_windows import BatchItem, Window, Windows
from consumers.transfer.base import TransferBackend
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError, TransientError
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.outputs import Output, dead_letter, now_ms
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import BATCHES_SUBMITTED, FILES_ARRIVED

log = logging.getLogger(__name__)
UNNAMEABLE = (
    "the file name is not UTF-8 and the transfer service names files in UTF-8 only: rename it in "
    "the cache (the sweeper then ships it under its new name)"
)
PENDING_RECHECK_S = 2.0
IDLE_RECHECK_S = 1.0  # how often running tasks are asked after whether they ended, for idle_tasks
READ_MAX = 500  # messages per read; a read returning fewer has drained what was there


class TransferredView(Protocol):
    """What the batcher knows of files.state: whether a version already reached the destination."""

    def refresh(self) -> object: ...

    def catch_up(self) -> object: ...

    def transferred(self, key: str, version: str) -> bool: ...

    def transferred_among(self, files: Iterable[tuple[str, str]]) -> set[tuple[str, str]]: ...


class NoView:
    """Before files.state exists (or when told not to look): nothing counts as transferred."""

    def refresh(self) -> None:
        return None

    def catch_up(self) -> None:
        return None

    def transferred(self, key: str, version: str) -> bool:
        return False

    def transferred_among(self, files: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return set()


class Batcher:
    """One batcher instance (its own consumer group on files.arrived)."""

    def __init__(
        self,
        config: Config,
        spec: StageSpec,
        backend: TransferBackend,
        view: TransferredView | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.spec = spec
        self.backend = backend
        self.view = view or NoView()
        self.clock = clock
        self.kafka = StageKafka(config, spec)
        self.codec = self.kafka.codec
        self.topic = config.topic(FILES_ARRIVED)
        b = config.batcher
        self.windows = Windows(self.topic, b.max_files, b.max_wait_s, b.max_bytes)
        self.pending: dict[str, None] = {}  # submitted tasks not known final, oldest first
        self._pending_checked = 0.0
        self._running_checked = float("-inf")
        self._paused = False
        self.batches_submitted = 0

    @property
    def consumer(self) -> Consumer:
        assert self.kafka.consumer is not None
        return self.kafka.consumer

    def _start(self) -> None:
        if not self.kafka.started:
            self.view.catch_up()  # everything transferred so far is known before the first batch
            self.kafka.start(on_revoke=self._on_revoke, on_rewind=self._drop_windows)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.windows.drop({tp.partition for tp in partitions})

    def step(self) -> int:
        """Consume what is there, close full or due windows, record and submit them."""
        self._start()
        if self._backpressure():
            self._idle_poll()
            return 0
        wait = self.windows.seconds_until_due(self.clock())
        timeout = 0.5 if wait is None else min(0.5, wait)
        with self.kafka.attempt():
            # Back as soon as a message is there: a window's clock starts when its first file is
            # consumed, not when a poll that waited for 500 of them gives up.
            messages = self.kafka.read(READ_MAX, timeout)
            closed, dead = self._window(messages)
            closed += self.windows.due(self.clock())
            if len(messages) < READ_MAX and self.windows.open_files and self._transfers_idle():
                closed += self.windows.close_all()
            idle = self.windows.idle_commits()
            if closed or dead or idle:
                self._record(closed, dead, idle)
        return len(messages)

    def _idle_poll(self) -> None:
        """Poll while paused (keeps the group membership); a message from a partition assigned
        since the pause is put back by seeking to it, so nothing is skipped."""
        msg = self.consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            self.consumer.pause([TopicPartition(topic, partition)])
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def _window(self, messages: list[Message]) -> tuple[list[Window], list[Output]]:
        # Followed at every step, idle ones too: a restart then catches up only the last moments.
        self.view.refresh()
        good, dead = self.kafka.decode(messages)
        # A FileMissing names no version to ship (the state keeper records it): its offset only
        # moves the window on, like a filtered message.
        decoded = {
            (d.msg.partition(), d.msg.offset()): d.value for d in good if d.record == "FileArrived"
        }
        sent = self.view.transferred_among((v["key"], v["version"]) for v in decoded.values())
        closed = []
        now = self.clock()
        for msg in messages:
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            value = decoded.get((partition, offset))
            item = self._item(value, sent) if value is not None else None
            if item is not None and item.raw_path is not None and not self.backend.raw_names:
                dead.append(dead_letter(self.config, self.codec, self.spec.name, UNNAMEABLE, msg))
                log.error("batcher: %s: %s", item.key, UNNAMEABLE)
                item = None
            window = self.windows.add(partition, offset, item, now)
            if window is not None:
                closed.append(window)
        return closed, dead

    def _item(self, event: dict[str, Any], sent: set[tuple[str, str]]) -> BatchItem | None:
        if (event["key"], event["version"]) in sent:
            log.debug("batcher: %s version %s already transferred", event["key"], event["version"])
            return None
        return BatchItem(
            event["key"],
            event["version"],
            event["path"],
            event["dest_path"],
            event["size"],
            event["mtime_ns"],
            event.get("attempt", 1),
            event.get("dataset_metadata"),
            event.get("file_metadata"),
            event.get("raw_path"),
        )

    def _record(self, closed: list[Window], dead: list[Output], idle: dict[int, int]) -> None:
        """Phase 1: the PREPARED batches with their windows' offsets; then each is submitted and
        recorded as SUBMITTED (phase 2)."""
        prepared: list[tuple[dict[str, Any], int]] = []
        outputs = list(dead)
        offsets = dict(idle)
        for window in closed:
            offsets[window.partition] = max(
                offsets.get(window.partition, 0), window.last_offset + 1
            )
            if not window.files:
                continue
            metrics.BATCH_WINDOWS.labels(window.closed_by).inc()
            submission_id = self.backend.new_submission_id(window.batch_id)
            record = batch_record(
                window, "PREPARED", submission_id, self.backend.name, None, now_ms()
            )
            outputs.append(self._batch_output(record, window.partition))
            prepared.append((record, window.partition))
        self.kafka.commit(
            outputs, [TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]
        )
        for record, partition in prepared:
            self._submit(record, partition)

    def _submit(self, record: dict[str, Any], partition: int) -> None:
        items = transfer_items(self.config, record["files"])
        try:
            task_id = self.backend.submit(
                record["batch_id"], record["submission_id"], items, record["label"]
            )
        except (TransientError, PermanentError) as exc:
            log.warning(
                "batch %s: submit failed, the monitor will submit it again: %s",
                record["batch_id"],
                exc,
            )
            return
        submitted = dict(record, phase="SUBMITTED", task_id=task_id, emitted_ms=now_ms())
        self.kafka.commit([self._batch_output(submitted, partition)])
        self.pending[task_id] = None
        self.batches_submitted += 1
        metrics.observe_batch(record["files"])
        log.info(
            "batch %s: %d files submitted as task %s",
            record["batch_id"],
            len(record["files"]),
            task_id,
        )

    def _batch_output(self, record: dict[str, Any], partition: int) -> Output:
        """The record of a batch, on the partition its window was cut from: batches.submitted is
        co-partitioned with files.arrived, so the state keeper that owns the batch's files (all
        of them keyed to that partition) reads it."""
        return Output(
            self.config.topic(BATCHES_SUBMITTED),
            record["batch_id"],
            self.codec.encode("BatchSubmitted", record),
            partition,
        )

    def _backpressure(self) -> bool:
        limit = self.config.batcher.max_pending_tasks
        if len(self.pending) >= limit and self.clock() - self._pending_checked >= PENDING_RECHECK_S:
            self._pending_checked = self.clock()
            self._running(limit)
        blocked = len(self.pending) >= limit
        if blocked != self._paused:
            assigned = self.consumer.assignment()
            (self.consumer.pause if blocked else self.consumer.resume)(assigned)
            self._paused = blocked
            log.info(
                "batcher: %s (%d tasks pending, limit %d)",
                "paused" if blocked else "resumed",
                len(self.pending),
                limit,
            )
        return blocked

    def _transfers_idle(self) -> bool:
        """True when fewer than ``idle_tasks`` of this batcher's tasks are running (asked at
        most once a second)."""
        slots = self.config.batcher.idle_tasks
        if slots == 0:
            return False
        if len(self.pending) < slots:
            return True
        if self.clock() - self._running_checked < IDLE_RECHECK_S:
            return False
        self._running_checked = self.clock()
        return self._running(slots) < slots

    def _running(self, enough: int) -> int:
        """How many pending tasks run, up to ``enough``: they are asked oldest first until that
        many are found running, and those found final leave the pending set (a task that cannot
        be asked counts as running)."""
        running = 0
        for task_id in list(self.pending):
            if running >= enough:
                break
            if self._final(task_id):
                del self.pending[task_id]
            else:
                running += 1
        return running

    def _final(self, task_id: str) -> bool:
        try:
            return self.backend.task(task_id).is_final
        except TransientError:
            return False

    def _drop_windows(self) -> None:
        """After a failed attempt (the consumer is back at its committed offsets): the open
        windows are consumed again, so they are dropped."""
        self.windows.drop({tp.partition for tp in self.consumer.assignment()})

    def close(self) -> None:
        """Leave the group; open windows are not recorded and will be consumed again."""
        self.kafka.close()
