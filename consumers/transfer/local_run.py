"""Run one local task: copy its remaining items on a shared pool and record outcomes durably.

The runner holds the task's lock for the whole run. Outcomes are recorded in batches: before a
batch is written, every directory its copies renamed into is fsynced, so a recorded outcome always
describes a durable file. Small files are copied in groups whose fsyncs share journal commits. The
record is rewritten at the end and every ``flush_interval_s`` (which doubles as the heartbeat, also
while one large file is being copied), never per file. A stop request ends the run after the files
in flight; the record is then released for another backend to resume.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from pathlib import Path

from consumers.transfer.base import FileOutcome
from consumers.transfer.local_copy import CopyResult, FileCopier, fsync_dir
from consumers.transfer.local_store import HOST, TaskRecord, TaskStore

log = logging.getLogger(__name__)

# A group of small files is written, then fsynced together (see FileCopier.copy_many).
GROUP_FILES = 32
GROUP_BYTES = 8 << 20


def run_task(
    store: TaskStore,
    task_id: str,
    root: Path,
    pool: Executor,
    stop: threading.Event,
    *,
    window: int,
    flush_interval_s: float,
) -> None:
    """Run the task if nobody else is; return at once when its lock is held elsewhere."""
    with store.lock(task_id) as locked:
        if not locked:
            log.debug("task %s is run elsewhere", task_id)
            return
        record = store.load(task_id)
        if record is None or record.status.is_final:
            return
        mine = (record.owner_pid, record.owner_host) == (os.getpid(), HOST)
        resumed = bool(record.outcomes) or not mine
        record.claim(time.time())
        record.nice_status = "OK"
        store.save(record)
        log.info(
            "task %s: %s %d of %d files",
            task_id,
            "resuming" if resumed else "starting",
            len(record.items) - len(record.outcomes),
            len(record.items),
        )
        copier = FileCopier(root, task_id[:13], stop)
        _TaskRunner(store, record, copier, pool, stop, window, flush_interval_s).run()


class _TaskRunner:
    def __init__(
        self,
        store: TaskStore,
        record: TaskRecord,
        copier: FileCopier,
        pool: Executor,
        stop: threading.Event,
        window: int,
        flush_interval_s: float,
    ) -> None:
        self._store = store
        self._record = record
        self._copier = copier
        self._pool = pool
        self._stop = stop
        self._window = window
        self._flush_interval_s = flush_interval_s
        self._unrecorded: list[tuple[int, FileOutcome]] = []
        self._dirs: set[str] = set()

    def run(self) -> None:
        record = self._record
        pending = deque(_groups(record, GROUP_FILES, GROUP_BYTES))
        inflight: dict[Future[list[CopyResult | None]], list[int]] = {}
        last_flush = time.monotonic()
        while pending or inflight:
            while pending and len(inflight) < self._window and not self._stop.is_set():
                group = pending.popleft()
                items = [record.items[i] for i in group]
                inflight[self._pool.submit(self._copier.copy_many, items)] = group
            if not inflight:
                break
            done, _ = wait(inflight, timeout=self._flush_interval_s, return_when=FIRST_COMPLETED)
            for future in done:
                for index, result in zip(inflight.pop(future), future.result(), strict=True):
                    self._collect(index, result)
            if time.monotonic() - last_flush >= self._flush_interval_s:
                self._flush()
                last_flush = time.monotonic()
        self._finish()

    def _collect(self, index: int, result: CopyResult | None) -> None:
        if result is None:
            return
        self._unrecorded.append((index, result.outcome))
        self._dirs.update(result.dirs)

    def _flush(self) -> None:
        self._absorb()
        self._save()

    def _absorb(self) -> None:
        """fsync the directories behind the unrecorded outcomes, then add them to the record."""
        for directory in sorted(self._dirs):
            fsync_dir(directory)
        self._dirs.clear()
        self._record.outcomes.update(self._unrecorded)
        self._unrecorded.clear()

    def _save(self) -> None:
        self._record.heartbeat = time.time()
        self._store.save(self._record)

    def _finish(self) -> None:
        record = self._record
        self._absorb()
        left = len(record.items) - len(record.outcomes)
        if left == 0:
            record.finish(time.time())
            failed = sum(1 for o in record.outcomes.values() if not o.ok)
            log.info("task %s %s: %d file(s) failed", record.task_id, record.status, failed)
        else:
            record.release()
            record.nice_status = "Queued"
            log.info("task %s stopped with %d file(s) left", record.task_id, left)
        self._save()


def _groups(record: TaskRecord, max_files: int, max_bytes: int) -> Iterator[list[int]]:
    """Indices of the items still to copy, in groups of at most ``max_files`` files and about
    ``max_bytes`` bytes (a larger file is a group of its own)."""
    group: list[int] = []
    size = 0
    for index, item in enumerate(record.items):
        if index in record.outcomes:
            continue
        if group and (len(group) >= max_files or size + item.size > max_bytes):
            yield group
            group, size = [], 0
        group.append(index)
        size += item.size
    if group:
        yield group
