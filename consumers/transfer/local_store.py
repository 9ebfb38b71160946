"""Task records of the local backend: one JSON file per task, written atomically, claimed by a lock.

A record holds the task's items, the outcomes recorded so far, its status and its owner (pid, host
and a heartbeat time). Records outlive the process, so a task whose runner died is resumed by the
next backend that polls it. Invariant: a record is rewritten only by the holder of the task's lock
file (an ``flock`` the kernel drops when the holder dies), so two runners never interleave writes;
the one exception is the first write, which creates the file exclusively.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.transfer.base import FileOutcome, TaskState, TaskStatus, TransferItem
from consumers.transfer.local_copy import fsync_dir

HOST = socket.gethostname()


@dataclass
class TaskRecord:
    """The persisted state of one local task; ``outcomes`` is keyed by item index."""

    task_id: str
    submission_id: str
    batch_id: str
    label: str
    items: list[TransferItem]
    request_time: float
    status: TaskStatus = TaskStatus.ACTIVE
    nice_status: str | None = "Queued"
    outcomes: dict[int, FileOutcome] = field(default_factory=dict)
    owner_pid: int | None = None
    owner_host: str | None = None
    heartbeat: float = 0.0
    completion_time: float | None = None

    def claim(self, now: float) -> None:
        """Mark this process as the task's runner."""
        self.owner_pid, self.owner_host, self.heartbeat = os.getpid(), HOST, now

    def release(self) -> None:
        """Leave the task to whichever backend polls it next."""
        self.owner_pid = self.owner_host = None

    def is_orphaned(self, now: float, stale_after_s: float) -> bool:
        """No live runner: no owner, a dead owner pid on this host, or a stale heartbeat."""
        if self.owner_pid is None:
            return True
        if self.owner_host == HOST and not pid_alive(self.owner_pid):
            return True
        return now - self.heartbeat > stale_after_s

    def finish(self, now: float) -> None:
        """Final status from the outcomes: FAILED when every file failed, else SUCCEEDED."""
        ok = any(o.ok for o in self.outcomes.values())
        self.status = TaskStatus.SUCCEEDED if ok else TaskStatus.FAILED
        self.nice_status = None
        self.completion_time = now

    def state(self) -> TaskState:
        outcomes = self.outcomes.values()
        skipped = sum(1 for o in outcomes if o.ok and o.skipped_identical)
        failed = sum(1 for o in outcomes if not o.ok)
        done = None
        if self.completion_time is not None:
            done = datetime.fromtimestamp(self.completion_time, UTC)
        return TaskState(
            task_id=self.task_id,
            status=self.status,
            nice_status=self.nice_status,
            files=len(self.items),
            files_transferred=len(self.outcomes) - skipped - failed,
            files_skipped=skipped,
            faults=failed,
            completion_time=done,
            deadline_expired=False,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "submission_id": self.submission_id,
            "batch_id": self.batch_id,
            "label": self.label,
            "request_time": self.request_time,
            "status": str(self.status),
            "nice_status": self.nice_status,
            "owner_pid": self.owner_pid,
            "owner_host": self.owner_host,
            "heartbeat": self.heartbeat,
            "completion_time": self.completion_time,
            "items": [[i.key, i.source, i.destination, i.size, i.mtime_ns] for i in self.items],
            "outcomes": {
                str(idx): [o.ok, o.checksum, o.checksum_algorithm, o.skipped_identical, o.reason]
                for idx, o in self.outcomes.items()
            },
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TaskRecord:
        items = [TransferItem(*fields) for fields in doc["items"]]
        outcomes = {
            int(idx): FileOutcome(items[int(idx)].key, *fields)
            for idx, fields in doc["outcomes"].items()
        }
        return cls(
            task_id=doc["task_id"],
            submission_id=doc["submission_id"],
            batch_id=doc["batch_id"],
            label=doc["label"],
            items=items,
            request_time=doc["request_time"],
            status=TaskStatus(doc["status"]),
            nice_status=doc["nice_status"],
            outcomes=outcomes,
            owner_pid=doc["owner_pid"],
            owner_host=doc["owner_host"],
            heartbeat=doc["heartbeat"],
            completion_time=doc["completion_time"],
        )


class TaskStore:
    """Task records under ``state_dir/tasks``: ``<task_id>.json`` and its ``<task_id>.lock``."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "tasks"
        self._dir.mkdir(parents=True, exist_ok=True)

    def create(self, record: TaskRecord) -> bool:
        """Write a new record; False (and nothing written) when the task already exists."""
        tmp = self._write_tmp(record)
        try:
            os.link(tmp, self._path(record.task_id))
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        fsync_dir(str(self._dir))
        return True

    def load(self, task_id: str) -> TaskRecord | None:
        try:
            text = self._path(task_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return TaskRecord.from_json(json.loads(text))

    def stamp(self, task_id: str) -> tuple[int, int, int] | None:
        """Inode, size and mtime of the task's record file (every save makes a new inode)."""
        try:
            st = os.stat(self._path(task_id))
        except (FileNotFoundError, ValueError):
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def save(self, record: TaskRecord) -> None:
        """Replace the record atomically; the caller holds the task's lock."""
        os.replace(self._write_tmp(record), self._path(record.task_id))
        fsync_dir(str(self._dir))

    @contextmanager
    def lock(self, task_id: str) -> Iterator[bool]:
        """Try to take the task's lock without waiting; yields whether it was taken."""
        fd = os.open(self._dir / f"{task_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _path(self, task_id: str) -> Path:
        return self._dir / f"{task_id}.json"

    def _write_tmp(self, record: TaskRecord) -> Path:
        tmp = self._dir / f".{record.task_id}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        data = json.dumps(record.to_json(), separators=(",", ":")).encode()
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
