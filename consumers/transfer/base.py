"""The interface every transfer backend offers, and the values it speaks in.

A backend runs a batch of files as one background *task* with an id, reports the task's state when
polled, and after the task is final gives one outcome per file. The batcher records the submission
id before it submits, so a submit repeated after a crash names the same id and the backend runs the
batch once (Globus accepts a submission id once; the local backend derives the task from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from terra_xfer.errors import PermanentError, TerraXferError, TransientError


class TransferError(TerraXferError):
    """Root of the errors a transfer backend raises."""


class TransferTransientError(TransferError, TransientError):
    """The transfer service is busy or unreachable (429, 5xx, connection); retry later.

    ``retry_after`` is the delay in seconds the service asked for, when it gave one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransferPermanentError(TransferError, PermanentError):
    """The request was refused or is malformed; retrying will not help."""


class TransferNotFoundError(TransferPermanentError):
    """The task (or path) named does not exist at the transfer service."""


@dataclass(frozen=True)
class TransferItem:
    """One file of a batch.

    ``key`` is the file's identity (site + "/" + path under the cache root) and is opaque here;
    ``source`` is where the backend reads the file (an absolute path in the cache for the local
    backend, a path on the source endpoint for Globus); ``destination`` is relative to the
    destination root and already rewritten by the caller. ``size`` and ``mtime_ns`` name the
    version that was batched: a source that no longer matches them is not copied.
    """

    key: str
    source: str
    destination: str
    size: int
    mtime_ns: int


class TaskStatus(StrEnum):
    """Task states, named as Globus names them."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


@dataclass(frozen=True)
class TaskState:
    """A task as last seen: its status, counters and whether its deadline has passed.

    A SUCCEEDED task may still hold failed files (skipped source errors); only the per-file
    outcomes say which files are safe.
    """

    task_id: str
    status: TaskStatus
    nice_status: str | None
    files: int
    files_transferred: int
    files_skipped: int
    faults: int
    completion_time: datetime | None
    deadline_expired: bool

    @property
    def is_final(self) -> bool:
        return self.status.is_final


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file: ``ok`` means the destination holds this version's content.

    ``skipped_identical`` marks a file that was not copied because the destination already held
    the same content. ``reason`` says why a file failed (or how an ok file was confirmed).
    """

    key: str
    ok: bool
    checksum: str | None
    checksum_algorithm: str | None
    skipped_identical: bool
    reason: str | None

    @classmethod
    def failed(cls, key: str, reason: str) -> FileOutcome:
        return cls(key, False, None, None, False, reason)


class TransferBackend(Protocol):
    """What the batcher, monitor and deleter need from a transfer service."""

    name: str
    raw_names: bool  # can address file names that are not UTF-8 (byte-exact paths)
    # Polling a task costs next to nothing (a local read): the monitor polls every this many
    # seconds instead of backing off. None for a service whose requests are counted.
    status_poll_s: float | None

    def new_submission_id(self, batch_id: str) -> str:
        """An idempotency key for submitting this batch; the caller records it before submit."""
        ...

    def submit(
        self, batch_id: str, submission_id: str, items: Sequence[TransferItem], label: str
    ) -> str:
        """Start the batch as a task and return its id; a repeated submission id returns the
        same task and does not run the batch again."""
        ...

    def task(self, task_id: str) -> TaskState:
        """The task's current state."""
        ...

    def outcomes(self, task_id: str, items: Sequence[TransferItem]) -> list[FileOutcome]:
        """One outcome per item, in the order given; only for a final task."""
        ...

    def confirm(
        self, item: TransferItem, checksum: str | None = None, algorithm: str | None = None
    ) -> FileOutcome:
        """Check the destination copy of one item (before deleting the cache copy, or for a file
        a final task did not list). ``checksum`` is the one the transfer recorded, when known:
        a backend that can read the destination compares with it instead of reading the source."""
        ...

    def close(self) -> None:
        """Release connections and threads; tasks in flight stay resumable."""
        ...
