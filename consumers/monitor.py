"""The monitor: follows every transfer task to its end and publishes one outcome per file.

It consumes batches.submitted, where the batcher records each batch PREPARED, submits it, then
records it SUBMITTED with its task id (both on one partition); the monitor follows that task. A
PREPARED batch whose SUBMITTED record has not come within ``submit_grace_s``, its partition read to
the end (so a replay never misses a SUBMITTED record already there), is submitted by the monitor
under the recorded submission id (idempotent): a batcher that died between recording and submitting
loses nothing, and a healthy batch costs one submit. Tasks are polled with exponential backoff (no
service pushes), or at the backend's fixed ``status_poll_s`` when a poll is only a local read, so a
finished local task is seen at once. Then each file gets FileTransferred or FileTransferFailed; a
file missing from the success list is confirmed at the destination (by the backend) before it is
called failed. Failed files are offered again as FileArrived (source RETRY, attempt + 1) after a
backoff, until ``max_attempts``, after which the failure is final.

Offsets advance only past batches whose every file has a final event out, so after a restart the
monitor follows again exactly the tasks still in flight (re-emitting outcomes of batches that finished
after the last commit: downstream stages are idempotent on them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from consumers.batch_records import transfer_items
from consumers.transfer.base import FileOutcome, TransferBackend, TransferItem
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError, TransientError
from terra_xfer.sites.cache import Sites
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.outputs import Output, now_ms
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import BATCHES_SUBMITTED, FILES_ARRIVED, FILES_TRANSFERRED

log = logging.getLogger(__name__)


@dataclass
class Tracked:
    """A batch being followed."""

    record: dict[str, Any]
    partition: int
    offset: int
    task_id: str | None
    next_poll: float = 0.0
    backoff: float = 0.0
    retries: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    done: bool = False

    @property
    def batch_id(self) -> str:
        return str(self.record["batch_id"])


class Monitor:
    """One monitor instance (its own consumer group on batches.submitted)."""

    def __init__(
        self,
        config: Config,
        spec: StageSpec,
        backend: TransferBackend,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.backend = backend
        self.clock = clock
        self.kafka = StageKafka(config, spec)
        self.codec = self.kafka.codec
        self.sites = Sites(config)
        self.topic = config.topic(BATCHES_SUBMITTED)
        self.tracked: dict[str, Tracked] = {}
        self.consumed: dict[int, int] = {}
        self.files_transferred = 0
        self.files_failed = 0

    def _forget(self) -> None:
        """After a failed attempt: every batch is read again from the committed offsets."""
        self.tracked.clear()
        self.consumed.clear()

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        self.tracked = {b: t for b, t in self.tracked.items() if t.partition not in lost}
        for p in lost:
            self.consumed.pop(p, None)

    def step(self) -> int:
        """Take new batches, poll the tasks that are due, publish what finished."""
        self.kafka.start(on_revoke=self._on_revoke, on_rewind=self._forget)
        with self.kafka.attempt():
            messages = self.kafka.read(100, self._wait_s())
            good, outputs = self.kafka.decode(messages)
            for msg in messages:
                p, o = msg.partition(), msg.offset()
                assert p is not None and o is not None
                self.consumed[p] = max(self.consumed.get(p, -1), o)
            for d in good:
                self._take(d.value, d.msg.partition() or 0, d.msg.offset() or 0)
            for tracked in self._due():
                outputs += self._follow(tracked)
            finished = [t for t in self.tracked.values() if t.done]
            if outputs or finished or messages:
                self._commit(outputs)
        for t in finished:
            self.tracked.pop(t.batch_id, None)
        return len(messages) + len(outputs)

    def _take(self, record: dict[str, Any], partition: int, offset: int) -> None:
        """Track a PREPARED batch; its SUBMITTED record brings the task id. A PREPARED batch
        without one is first due once ``submit_grace_s`` has passed (see :meth:`_follow`)."""
        batch_id = record["batch_id"]
        task_id = record.get("task_id")
        known = self.tracked.get(batch_id)
        if known is not None:
            if known.task_id is None and task_id is not None:
                known.task_id = task_id
                known.next_poll = known.backoff = 0.0  # submitted by the batcher: follow it now
        elif record["phase"] == "PREPARED":
            grace = 0.0 if task_id else self.config.monitor.submit_grace_s
            self.tracked[batch_id] = Tracked(
                record, partition, offset, task_id, next_poll=self.clock() + grace
            )
        # A SUBMITTED record of an untracked batch: its PREPARED record was already followed to the
        # end and committed; nothing to do.

    def _wait_s(self) -> float:
        """How long to wait for new batches: until the next poll or retry is due (a batch with
        retries waiting is only acted on for them), between 0.01 and 0.5 s."""
        now = self.clock()
        times = [
            min(at for at, _ in t.retries) if t.retries else t.next_poll
            for t in self.tracked.values()
            if not t.done
        ]
        return min(0.5, max(0.01, min(times, default=now + 0.5) - now))

    def _due(self) -> list[Tracked]:
        now = self.clock()
        return [
            t
            for t in self.tracked.values()
            if not t.done and (t.next_poll <= now or any(at <= now for at, _ in t.retries))
        ]

    def _follow(self, t: Tracked) -> list[Output]:
        now = self.clock()
        if t.retries:
            return self._release_retries(t, now)
        try:
            if t.task_id is None:
                if not self._read_to_end(t.partition):
                    self._later(t)  # its SUBMITTED record may be among those not read yet
                    return []
                t.task_id = self._submit(t)
            state = self.backend.task(t.task_id)
            metrics.observe_task(t.task_id, state.status, state.is_final)
        except TransientError as exc:
            self._later(t, getattr(exc, "retry_after", None))
            log.warning("batch %s task %s: %s", t.batch_id, t.task_id, exc)
            return []
        except PermanentError as exc:
            # The service refused the batch or no longer knows its task: every file of it failed
            # this attempt, with the reason, and is retried in a new batch.
            log.error("batch %s task %s: %s", t.batch_id, t.task_id, exc)
            failed = FileOutcome.failed
            outputs = [
                self._outcome_event(t, f, failed(f["key"], str(exc)), now)
                for f in t.record["files"]
            ]
            t.done = not t.retries
            return outputs
        if not state.is_final:
            if state.status == "INACTIVE" or state.deadline_expired:
                log.warning(
                    "batch %s task %s is %s%s",
                    t.batch_id,
                    t.task_id,
                    state.status,
                    " past its deadline" if state.deadline_expired else "",
                )
            self._later(t)
            return []
        return self._finish(t, now)

    def _submit(self, t: Tracked) -> str:
        """Submit a batch the batcher recorded but did not record as submitted in time."""
        log.warning(
            "batch %s: no SUBMITTED record within %.0f s; submitting it as %s",
            t.batch_id,
            self.config.monitor.submit_grace_s,
            t.record["submission_id"],
        )
        return self.backend.submit(
            t.batch_id, t.record["submission_id"], self._items(t), t.record["label"]
        )

    def _read_to_end(self, partition: int) -> bool:
        """Whether every committed record of ``partition`` has been consumed (asked of the broker:
        only for a batch whose grace has passed). A SUBMITTED record already in the topic is then
        in hand, so after a restart a replayed PREPARED batch is not submitted again."""
        consumer = self.kafka.consumer
        assert consumer is not None
        tp = TopicPartition(self.topic, partition)
        _low, end = consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
        [at] = consumer.position([tp])
        return at.offset >= end

    def _later(self, t: Tracked, retry_after: float | None = None) -> None:
        m = self.config.monitor
        fixed = self.backend.status_poll_s
        if fixed is not None:
            t.backoff = fixed
        else:
            t.backoff = min(m.poll_max_s, max(m.poll_initial_s, t.backoff * 2))
        t.next_poll = self.clock() + max(t.backoff, retry_after or 0.0)

    def _items(self, t: Tracked) -> list[TransferItem]:
        return transfer_items(self.config, t.record["files"])

    def _finish(self, t: Tracked, now: float) -> list[Output]:
        assert t.task_id is not None
        items = self._items(t)
        try:
            outcomes = self.backend.outcomes(t.task_id, items)
        except TransientError as exc:
            self._later(t, getattr(exc, "retry_after", None))
            log.warning("batch %s: outcomes not available yet: %s", t.batch_id, exc)
            return []
        outputs = []
        # The backend has already checked, at the destination, any file a task did not list.
        for file, outcome in zip(t.record["files"], outcomes, strict=True):
            outputs.append(self._outcome_event(t, file, outcome, now))
        t.done = not t.retries
        log.info(
            "batch %s task %s finished: %d ok, %d failed",
            t.batch_id,
            t.task_id,
            sum(o.ok for o in outcomes),
            sum(not o.ok for o in outcomes),
        )
        return outputs

    def _outcome_event(
        self, t: Tracked, file: dict[str, Any], outcome: FileOutcome, now: float
    ) -> Output:
        base = {
            "key": file["key"],
            "version": file["version"],
            "path": file["path"],
            "dest_path": file["dest_path"],
            "size": file["size"],
            "mtime_ns": file["mtime_ns"],
            "batch_id": t.batch_id,
            "task_id": t.task_id,
            "backend": self.backend.name,
            "attempt": file.get("attempt", 1),
            "emitted_ms": now_ms(),
        }
        topic = self.config.topic(FILES_TRANSFERRED)
        sensor = self.sites.sensor(file["key"], file["path"])
        metrics.count_file("transferred" if outcome.ok else "failed", sensor, file["size"])
        if outcome.ok:
            self.files_transferred += 1
            value = base | {
                "checksum": outcome.checksum,
                "checksum_algorithm": outcome.checksum_algorithm,
                "skipped_identical": outcome.skipped_identical,
                "dataset_metadata": file.get("dataset_metadata"),
                "file_metadata": file.get("file_metadata"),
                "raw_path": file.get("raw_path"),
            }
            return Output(topic, file["key"], self.codec.encode("FileTransferred", value))
        self.files_failed += 1
        m = self.config.monitor
        final = base["attempt"] >= m.max_attempts
        delay = m.retry_backoff_s * (2 ** (base["attempt"] - 1))
        value = base | {
            "reason": outcome.reason or "not transferred",
            "final": final,
            "retry_at_ms": None if final else now_ms() + int(delay * 1000),
        }
        if not final:
            t.retries.append((now + delay, file))
        return Output(topic, file["key"], self.codec.encode("FileTransferFailed", value))

    def _release_retries(self, t: Tracked, now: float) -> list[Output]:
        due = [f for at, f in t.retries if at <= now]
        t.retries = [(at, f) for at, f in t.retries if at > now]
        t.done = not t.retries
        return [self._retry_event(t, f) for f in due]

    def _retry_event(self, t: Tracked, file: dict[str, Any]) -> Output:
        attempt = file.get("attempt", 1) + 1
        value = {
            "event_id": f"retry:{t.batch_id}:{file['key']}:{attempt}",
            "key": file["key"],
            "version": file["version"],
            "site": file["key"].split("/", 1)[0],
            "path": file["path"],
            "raw_path": file.get("raw_path"),
            "sensor": None,
            "date": None,
            "timestamp": None,
            "dest_path": file["dest_path"],
            "size": file["size"],
            "mtime_ns": file["mtime_ns"],
            "source": "RETRY",
            "source_ref": f"retry of {t.batch_id}",
            "logged_ms": None,
            "remote_host": None,
            "username": None,
            "emitted_ms": now_ms(),
            "attempt": attempt,
            "dataset_metadata": file.get("dataset_metadata"),
            "file_metadata": file.get("file_metadata"),
        }
        log.info("%s: retrying (attempt %d)", file["key"], attempt)
        return Output(
            self.config.topic(FILES_ARRIVED), file["key"], self.codec.encode("FileArrived", value)
        )

    def _commit(self, outputs: list[Output]) -> None:
        """Outputs and offsets in one transaction; offsets stop at the oldest unfinished batch."""
        offsets = {p: o + 1 for p, o in self.consumed.items()}
        for t in self.tracked.values():
            if not t.done:
                offsets[t.partition] = min(offsets.get(t.partition, t.offset), t.offset)
        self.kafka.commit(
            outputs, [TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]
        )

    @property
    def in_flight(self) -> int:
        return sum(not t.done for t in self.tracked.values())

    def close(self) -> None:
        self.kafka.close()
