"""Task engine of the Globus Transfer test double: tasks, their real file copies, their documents.

Endpoints are local directories (the endpoint's ``/`` is the directory). A worker thread moves each
ACTIVE task forward one file at a time, really copying it, honouring ``sync_level`` (a file already
identical at the destination is skipped, not listed as transferred), ``verify_checksum`` and
``skip_source_errors`` (a failing path lands in skipped_errors instead of failing the task). Planned
faults make a task end FAILED or go INACTIVE after a number of files; a deadline that passes on the
double's clock fails the task with the fatal error EXPIRED. Documents follow the Transfer API v0.10.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OWNER_ID = "6b5fbd4c-4bd2-4a1e-8f5c-6f0c2a3b9e11"


def iso(ts: float | None) -> str | None:
    """Transfer API timestamps: ``2021-09-02T18:04:49+00:00``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), UTC).isoformat()


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    root: Path
    display_name: str

    def resolve(self, path: str) -> Path | None:
        """The local file for an endpoint path (``/x`` or ``/~/x``); None if it climbs out."""
        clean = posixpath.normpath("/" + path.removeprefix("/~").lstrip("/"))
        if clean.startswith("/.."):
            return None
        return self.root / clean.lstrip("/")


@dataclass
class TaskPlan:
    """Injected behaviour for one task: end FAILED or go INACTIVE once ``after_files`` are done."""

    fail_after: int | None = None
    fail_code: str = "ENDPOINT_ERROR"
    fail_description: str = "the destination endpoint refused the transfer"
    report_fatal_error: bool = True  # False: the document shows none, as for tasks before 2017
    pause_after: int | None = None
    pause_code: str = "AUTH"


@dataclass
class Task:
    task_id: str
    submission_id: str
    label: str | None
    source: Endpoint
    destination: Endpoint
    items: list[tuple[str, str]]
    sync_level: int | None
    verify_checksum: bool
    skip_source_errors: bool
    deadline: float | None
    request_time: float
    plan: TaskPlan = field(default_factory=TaskPlan)
    status: str = "ACTIVE"
    nice_status: str | None = "Queued"
    fatal_error: dict[str, str] | None = None
    completion_time: float | None = None
    next_index: int = 0
    files_transferred: int = 0
    files_skipped: int = 0
    faults: int = 0
    bytes_transferred: int = 0
    bytes_checksummed: int = 0
    successful: list[dict[str, Any]] = field(default_factory=list)
    skipped_errors: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED")

    def event(
        self, now: float, code: str, description: str, details: str = "", *, error: bool
    ) -> None:
        self.events.append(
            {
                "DATA_TYPE": "event",
                "code": code,
                "is_error": error,
                "description": description,
                "details": details,
                "time": iso(now),
            }
        )

    def end(self, now: float, status: str, fatal: tuple[str, str] | None = None) -> None:
        self.status, self.nice_status, self.completion_time = status, None, now
        if fatal is not None:
            self.fatal_error = {"code": fatal[0], "description": fatal[1]}
            self.event(now, fatal[0], fatal[1], error=True)
        else:
            self.event(now, "SUCCEEDED", "succeeded", error=False)

    def doc(self) -> dict[str, Any]:
        """The task document, as ``GET /task/<id>`` returns it."""
        done = self.files_transferred + self.files_skipped + len(self.skipped_errors)
        return {
            "DATA_TYPE": "task",
            "task_id": self.task_id,
            "type": "TRANSFER",
            "status": self.status,
            "nice_status": self.nice_status,
            "nice_status_details": None,
            "nice_status_expires_in": None if self.final else -1,
            "nice_status_short_description": self.nice_status,
            "is_ok": None if self.final else self.status == "ACTIVE",
            "is_paused": False,
            "fatal_error": self.fatal_error,
            "label": self.label,
            "owner_id": OWNER_ID,
            "username": "u_" + OWNER_ID.replace("-", "")[:26],
            "command": "API 0.10",
            "request_time": iso(self.request_time),
            "completion_time": iso(self.completion_time),
            "deadline": iso(self.deadline),
            "source_endpoint": self.source.display_name,
            "source_endpoint_id": self.source.endpoint_id,
            "source_endpoint_display_name": self.source.display_name,
            "destination_endpoint": self.destination.display_name,
            "destination_endpoint_id": self.destination.endpoint_id,
            "destination_endpoint_display_name": self.destination.display_name,
            "sync_level": self.sync_level,
            "verify_checksum": self.verify_checksum,
            "skip_source_errors": self.skip_source_errors,
            "encrypt_data": False,
            "preserve_timestamp": False,
            "delete_destination_extra": False,
            "fail_on_quota_errors": False,
            "recursive_symlinks": "ignore",
            "filter_rules": None,
            "history_deleted": False,
            "canceled_by_admin": None,
            "canceled_by_admin_message": None,
            "files": len(self.items),
            "directories": 0,
            "symlinks": 0,
            "files_transferred": self.files_transferred,
            "files_skipped": self.files_skipped,
            "faults": self.faults,
            "bytes_transferred": self.bytes_transferred,
            "bytes_checksummed": self.bytes_checksummed,
            "effective_bytes_per_second": 0,
            "subtasks_total": len(self.items),
            "subtasks_pending": 0 if self.final else len(self.items) - done,
            "subtasks_succeeded": self.files_transferred + self.files_skipped,
            "subtasks_skipped_errors": len(self.skipped_errors),
            "subtasks_failed": 1
            if self.fatal_error and self.fatal_error["code"] != "EXPIRED"
            else 0,
            "subtasks_expired": 1
            if self.fatal_error and self.fatal_error["code"] == "EXPIRED"
            else 0,
            "subtasks_canceled": 0,
            "subtasks_retrying": 0,
        }


@dataclass(frozen=True)
class _Step:
    """The result of copying one item, applied to its task under the engine's lock."""

    kind: str  # "ok", "skipped" or an error code
    size: int = 0
    checksummed: int = 0
    details: str = ""


class Engine:
    """Moves tasks forward in one worker thread; ``lock`` guards every task and plan."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.lock = threading.Condition()
        self.tasks: dict[str, Task] = {}
        self.failing_paths: dict[str, str] = {}
        self._clock = clock
        self._held = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="globus-double-engine")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
        self._thread.join()

    def add(self, task: Task) -> None:
        with self.lock:
            self.tasks[task.task_id] = task
            self.lock.notify_all()

    def hold(self, held: bool) -> None:
        """While held, no task moves forward (lets a test observe a task in flight)."""
        with self.lock:
            self._held = held
            self.lock.notify_all()

    def resume(self, task_id: str) -> None:
        with self.lock:
            task = self.tasks[task_id]
            if task.status == "INACTIVE":
                task.status, task.nice_status = "ACTIVE", "OK"
                task.event(self._clock(), "UNPAUSED", "the task was resumed", error=False)
            self.lock.notify_all()

    def poke(self) -> None:
        with self.lock:
            self.lock.notify_all()

    def _loop(self) -> None:
        while True:
            with self.lock:
                task = self._next_task()
                while task is None and not self._stopping:
                    self.lock.wait()
                    task = self._next_task()
                if self._stopping:
                    return
                assert task is not None
                index = self._plan_step(task)
                if index is None:
                    self.lock.notify_all()
                    continue
                source_path, destination_path = task.items[index]
                injected = self.failing_paths.get(source_path)
            step = _copy_item(task, source_path, destination_path, injected)
            with self.lock:
                self._apply(task, index, step)
                self.lock.notify_all()

    def _next_task(self) -> Task | None:
        if self._held:
            return None
        now = self._clock()
        for task in self.tasks.values():
            expired = task.deadline is not None and now > task.deadline
            if task.status == "ACTIVE" or (task.status == "INACTIVE" and expired):
                return task
        return None

    def _plan_step(self, task: Task) -> int | None:
        """Settle deadline, injected faults and completion; else the index of the next item."""
        now = self._clock()
        plan = task.plan
        if task.deadline is not None and now > task.deadline:
            task.end(now, "FAILED", ("EXPIRED", "the task deadline expired"))
        elif plan.fail_after is not None and task.next_index >= plan.fail_after:
            task.end(now, "FAILED", (plan.fail_code, plan.fail_description))
            if not plan.report_fatal_error:
                task.fatal_error = None
        elif plan.pause_after is not None and task.next_index >= plan.pause_after:
            plan.pause_after = None
            task.status, task.nice_status = "INACTIVE", plan.pause_code
            task.event(now, plan.pause_code, "credentials for the endpoint expired", error=True)
        elif task.next_index >= len(task.items):
            task.end(now, "SUCCEEDED")
        else:
            task.nice_status = "OK"
            return task.next_index
        return None

    def _apply(self, task: Task, index: int, step: _Step) -> None:
        now = self._clock()
        source_path, destination_path = task.items[index]
        task.next_index = index + 1
        task.bytes_checksummed += step.checksummed
        if step.kind == "ok":
            task.files_transferred += 1
            task.bytes_transferred += step.size
            task.successful.append(
                {
                    "DATA_TYPE": "successful_transfer",
                    "source_path": source_path,
                    "destination_path": destination_path,
                }
            )
        elif step.kind == "skipped":
            task.files_skipped += 1
        else:
            task.faults += 1
            description = f"{step.kind} on {source_path}"
            task.event(now, step.kind, description, step.details, error=True)
            if not task.skip_source_errors:
                task.end(now, "FAILED", (step.kind, description))
                return
            task.skipped_errors.append(_skipped_error(source_path, destination_path, step, now))


def _skipped_error(source: str, destination: str, step: _Step, now: float) -> dict[str, Any]:
    return {
        "DATA_TYPE": "skipped_error",
        "source_path": source,
        "destination_path": destination,
        "error_code": step.kind,
        "error_details": step.details,
        "error_time": iso(now),
        "checksum_algorithm": None,
        "external_checksum": None,
        "is_delete_destination_extra": False,
        "is_directory": False,
        "is_symlink": False,
    }


def _copy_item(task: Task, source_path: str, destination_path: str, injected: str | None) -> _Step:
    """Really copy one file between the endpoint directories (outside the engine's lock)."""
    src = task.source.resolve(source_path)
    dst = task.destination.resolve(destination_path)
    if injected is not None:
        return _Step(injected, details=f"injected {injected} for {source_path}")
    if src is None or dst is None:
        return _Step("PERMISSION_DENIED", details="path outside the endpoint root")
    try:  # the source may go at any moment, as on a real endpoint: that item is not found
        src_stat = src.stat()
        if _in_sync(task.sync_level, src, dst, src_stat):
            checked = 2 * src_stat.st_size if task.sync_level == 3 else 0
            return _Step("skipped", checksummed=checked)
        data = src.read_bytes()
    except FileNotFoundError:
        return _Step("FILE_NOT_FOUND", details=f"No such file or directory: {source_path}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex}.globus-part"
    tmp.write_bytes(data)
    os.replace(tmp, dst)
    checksummed = 0
    if task.verify_checksum:
        if _md5(dst) != hashlib.md5(data, usedforsecurity=False).hexdigest():
            return _Step("VERIFY_CHECKSUM", details="checksum mismatch after transfer")
        checksummed = 2 * len(data)
    return _Step("ok", size=len(data), checksummed=checksummed)


def _in_sync(sync_level: int | None, src: Path, dst: Path, src_stat: os.stat_result) -> bool:
    """Whether ``dst`` already matches ``src`` at this sync level (0 exists … 3 checksum)."""
    if sync_level is None:
        return False
    try:
        dst_stat = dst.stat()
    except FileNotFoundError:
        return False
    if sync_level == 0:
        return True
    if sync_level == 1:
        return dst_stat.st_size == src_stat.st_size
    if sync_level == 2:
        return src_stat.st_mtime <= dst_stat.st_mtime
    return dst_stat.st_size == src_stat.st_size and _md5(src) == _md5(dst)


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
