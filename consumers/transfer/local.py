"""The embedded transfer backend: copies batches on this machine as background tasks, like Globus.

Each submitted batch becomes a task with an id, run in worker threads and polled by the monitor
exactly as a Globus task is. The task id is derived from the submission id, which is derived from
the batch id, so a repeated submit finds the existing task and the batch runs once. Task records
persist under ``state_dir`` (see :mod:`consumers.transfer.local_store`); a task whose runner died
(its pid is gone, or its heartbeat is stale) is resumed by whichever instance next polls it. Re-running
is safe because every copy is atomic and a file already identical at the destination is skipped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from consumers.transfer.base import (
    FileOutcome,
    TaskState,
    TransferItem,
    TransferNotFoundError,
    TransferPermanentError,
)
from consumers.transfer.local_confirm import confirm
from consumers.transfer.local_run import run_task
from consumers.transfer.local_store import HOST, TaskRecord, TaskStore

log = logging.getLogger(__name__)

# Fixed namespaces: the same batch id gives the same submission id and task id in every process.
_SUBMISSION_NS = uuid.UUID("5d3c1f4e-6a0b-5e43-9c51-2f6f0f7a6b10")
_TASK_NS = uuid.UUID("0b8f3a52-1d6e-5c7a-8e24-7b9d4c3e2a61")
# Records of unfinished tasks kept to answer polls without parsing an unchanged file again; one
# is read again after _SEEN_FOR_S even if its stamp is unchanged (file times are coarse).
_SEEN_LIMIT = 1024
_SEEN_FOR_S = 1.0


class LocalTransfer:
    """Copy batches from the cache into ``destination_root``; task records live in ``state_dir``.

    ``workers`` threads copy files (shared by all tasks); at most ``max_active_tasks`` tasks run
    at once and the rest wait, as Globus queues a user's tasks. A runner rewrites its record every
    ``flush_interval_s``; a record whose heartbeat is older than ``stale_after_s`` counts as
    orphaned even if its owner pid still exists.
    """

    name = "local"
    raw_names = True
    status_poll_s: float | None = 0.05  # a poll is a stat of the task's record

    def __init__(
        self,
        destination_root: Path | str,
        state_dir: Path | str,
        workers: int = 2,
        *,
        max_active_tasks: int = 3,
        flush_interval_s: float = 1.0,
        stale_after_s: float = 30.0,
    ) -> None:
        self._root = Path(destination_root)
        self._store = TaskStore(Path(state_dir))
        self._workers = max(1, workers)
        self._flush_interval_s = flush_interval_s
        self._stale_after_s = stale_after_s
        self._copy_pool = ThreadPoolExecutor(self._workers, thread_name_prefix="local-copy")
        self._task_pool = ThreadPoolExecutor(max_active_tasks, thread_name_prefix="local-task")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._scheduled: set[str] = set()
        self._seen: dict[str, tuple[tuple[int, int, int], float, TaskRecord]] = {}
        self._closed = False

    def new_submission_id(self, batch_id: str) -> str:
        """Deterministic: the same batch always gets the same submission id."""
        return str(uuid.uuid5(_SUBMISSION_NS, batch_id))

    def submit(
        self, batch_id: str, submission_id: str, items: Sequence[TransferItem], label: str
    ) -> str:
        """Create the task (once per submission id) and start it; return its id."""
        if not items:
            raise TransferPermanentError(f"batch {batch_id}: a transfer needs at least one item")
        if self._closed:
            raise TransferPermanentError(f"batch {batch_id}: the local backend is closed")
        task_id = str(uuid.uuid5(_TASK_NS, submission_id))
        now = time.time()
        record = TaskRecord(task_id, submission_id, batch_id, label, list(items), now)
        record.claim(now)
        if self._store.create(record):
            log.info("batch %s: task %s submitted with %d files", batch_id, task_id, len(items))
            self._schedule(task_id)
        else:
            # Submitting again is how a retried step learns its task: not a second transfer.
            log.debug(
                "batch %s: task %s exists for submission %s; following it",
                batch_id,
                task_id,
                submission_id,
            )
            self._resume_if_orphaned(self._load(task_id))
        return task_id

    def task(self, task_id: str) -> TaskState:
        """The task's state from its record; resumes the task if its runner is gone.

        An unfinished task's record is parsed again only when its file was replaced, so frequent
        polls cost a stat each.
        """
        record = self._load_polled(task_id)
        if not record.status.is_final:
            self._resume_if_orphaned(record)
        return record.state()

    def outcomes(self, task_id: str, items: Sequence[TransferItem]) -> list[FileOutcome]:
        """One outcome per item from the final task's record; an item the task did not hold is
        checked at the destination instead."""
        record = self._load(task_id)
        if not record.status.is_final:
            raise TransferPermanentError(f"task {task_id} is {record.status}, not final")
        by_key = {record.items[i].key: o for i, o in record.outcomes.items()}
        return [by_key.get(item.key) or self.confirm(item) for item in items]

    def confirm(
        self, item: TransferItem, checksum: str | None = None, algorithm: str | None = None
    ) -> FileOutcome:
        """Compare the destination copy's size and sha256 with ``checksum`` when it is a sha256,
        else with the item's source."""
        return confirm(self._root, item, checksum, algorithm)

    def close(self) -> None:
        """Stop after the files in flight; unfinished tasks are left for another instance."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._task_pool.shutdown(wait=True, cancel_futures=True)
        self._copy_pool.shutdown(wait=True)
        for task_id in sorted(self._scheduled):
            self._release(task_id)

    def _load(self, task_id: str) -> TaskRecord:
        record = self._store.load(_canonical(task_id))
        if record is None:
            raise TransferNotFoundError(f"unknown local task {task_id!r}")
        return record

    def _load_polled(self, task_id: str) -> TaskRecord:
        """The task's record, from the last poll when its file is unchanged (read-only use)."""
        task_id = _canonical(task_id)
        now = time.monotonic()
        stamp = self._store.stamp(task_id)
        with self._lock:
            seen = self._seen.get(task_id)
        if (
            stamp is not None
            and seen is not None
            and seen[0] == stamp
            and now - seen[1] < _SEEN_FOR_S
        ):
            return seen[2]
        # Stamped before reading: a record replaced in between is read again at the next poll.
        record = self._load(task_id)
        with self._lock:
            if record.status.is_final or stamp is None:
                self._seen.pop(task_id, None)
            else:
                if len(self._seen) >= _SEEN_LIMIT:
                    self._seen.clear()
                self._seen[task_id] = (stamp, now, record)
        return record

    def _resume_if_orphaned(self, record: TaskRecord) -> None:
        if record.status.is_final or not record.is_orphaned(time.time(), self._stale_after_s):
            return
        with self._lock:
            if record.task_id in self._scheduled:
                return
        log.warning(
            "task %s: no live runner (owner pid %s on %s, heartbeat %.0f s ago); resuming",
            record.task_id,
            record.owner_pid,
            record.owner_host,
            time.time() - record.heartbeat,
        )
        self._schedule(record.task_id)

    def _schedule(self, task_id: str) -> None:
        with self._lock:
            if self._closed or task_id in self._scheduled:
                return
            self._scheduled.add(task_id)
            self._task_pool.submit(self._run, task_id)

    def _run(self, task_id: str) -> None:
        try:
            run_task(
                self._store,
                task_id,
                self._root,
                self._copy_pool,
                self._stop,
                window=self._workers * 4,
                flush_interval_s=self._flush_interval_s,
            )
        except Exception:
            # The record keeps this pid; its heartbeat goes stale and the next poll resumes it.
            log.exception("task %s: runner failed", task_id)
        finally:
            with self._lock:
                self._scheduled.discard(task_id)

    def _release(self, task_id: str) -> None:
        """Hand a task that never started here back to whoever polls it next."""
        with self._store.lock(task_id) as locked:
            if not locked:
                return
            record = self._store.load(task_id)
            mine = record is not None and (record.owner_pid, record.owner_host) == (
                os.getpid(),
                HOST,
            )
            if record is not None and mine and not record.status.is_final:
                record.release()
                self._store.save(record)


def _canonical(task_id: str) -> str:
    """The task id in its one spelling; anything else names no task (and no file)."""
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        raise TransferNotFoundError(f"unknown local task {task_id!r}") from None
