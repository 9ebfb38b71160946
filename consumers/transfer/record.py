"""A transfer backend for measuring the pipeline's own overhead: it records outcomes, moves nothing.

**For benchmarks only** (``[transfer] backend = "record"``): every submitted batch is a task that is
already SUCCEEDED, and every file of it is reported transferred without its bytes being read or
written, so a run through the whole pipeline measures Kafka, Avro, state and batching with the
filesystem taken out. Nothing reaches the destination: pair it with ``[deleter] dry_run = true``,
or the deleter would remove cache files that were never copied.

Task ids are derived from submission ids (as the local backend does), so a repeated submit names
the same task. The record of tasks is in memory; a task this instance did not submit (another
process, or one before a restart) still answers SUCCEEDED, because this backend's answer never
depends on the bytes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from consumers.transfer.base import (
    FileOutcome,
    TaskState,
    TaskStatus,
    TransferItem,
    TransferPermanentError,
)

log = logging.getLogger(__name__)

NOTE = "recorded without moving bytes (record backend, for measuring overhead)"
_SUBMISSION_NS = uuid.UUID("7e1f0c2a-3b4d-5e6f-8a9b-0c1d2e3f4a5b")
_TASK_NS = uuid.UUID("1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d")


class RecordTransfer:
    """Complete every task at once, reporting each file transferred; no file is opened."""

    name = "record"
    raw_names = True
    status_poll_s: float | None = None  # every task is final when first polled

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}
        self.files_recorded = 0

    def new_submission_id(self, batch_id: str) -> str:
        """Deterministic: the same batch always gets the same submission id."""
        return str(uuid.uuid5(_SUBMISSION_NS, batch_id))

    def submit(
        self, batch_id: str, submission_id: str, items: Sequence[TransferItem], label: str
    ) -> str:
        """Record the batch as a SUCCEEDED task (once per submission id) and return its id."""
        if not items:
            raise TransferPermanentError(f"batch {batch_id}: a transfer needs at least one item")
        task_id = str(uuid.uuid5(_TASK_NS, submission_id))
        with self._lock:
            if task_id not in self._tasks:
                self._tasks[task_id] = _succeeded(task_id, len(items))
                self.files_recorded += len(items)
        log.debug("batch %s: task %s recorded with %d files", batch_id, task_id, len(items))
        return task_id

    def task(self, task_id: str) -> TaskState:
        """SUCCEEDED, with the file count when this instance recorded the task."""
        with self._lock:
            known = self._tasks.get(task_id)
        return known if known is not None else _succeeded(task_id, 0)

    def outcomes(self, task_id: str, items: Sequence[TransferItem]) -> list[FileOutcome]:
        """Every item transferred (no checksum: nothing was read)."""
        return [self.confirm(item) for item in items]

    def confirm(
        self, item: TransferItem, checksum: str | None = None, algorithm: str | None = None
    ) -> FileOutcome:
        """Reported present at the destination without looking: this backend copies nothing."""
        return FileOutcome(item.key, True, None, None, False, NOTE)

    def close(self) -> None:
        """Nothing to release."""


def _succeeded(task_id: str, files: int) -> TaskState:
    return TaskState(
        task_id=task_id,
        status=TaskStatus.SUCCEEDED,
        nice_status=None,
        files=files,
        files_transferred=files,
        files_skipped=0,
        faults=0,
        completion_time=datetime.fromtimestamp(time.time(), UTC),
        deadline_expired=False,
    )
