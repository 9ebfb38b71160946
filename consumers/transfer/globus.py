"""The Globus transfer backend: one Globus Transfer task per batch, through globus-sdk 4.

It authenticates as a confidential app (client credentials, so no endpoint re-activation), submits
with the submission id the batcher recorded (Globus accepts a submission id once, so a repeated
submit returns the same task), asks for ``sync_level="checksum"`` (a re-transfer of an identical
file is a no-op), ``verify_checksum`` and ``skip_source_errors`` (one bad file does not fail the
batch). Per-file outcomes come from the task's successful transfers and skipped errors; a file in
neither list of a SUCCEEDED task was skipped as identical or lost, and ``confirm`` tells which.
Every globus-sdk exception is wrapped here; the client secret never appears in a message or repr.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import globus_sdk
from globus_sdk.transport import RequestsTransport, RetryConfig

from consumers.transfer.base import (
    FileOutcome,
    TaskState,
    TaskStatus,
    TransferItem,
    TransferNotFoundError,
    TransferPermanentError,
)
from consumers.transfer.globus_errors import globus_boundary
from terra_xfer.config import Secret

log = logging.getLogger(__name__)

TRANSFER_SCOPE = globus_sdk.TransferClient.scopes.all


class GlobusTransfer:
    """Submit and follow Globus Transfer tasks from ``source_endpoint`` to ``destination_endpoint``.

    Destinations are ``destination_base`` joined with each item's relative destination. Service
    URLs default to globus-sdk's (``GLOBUS_SDK_ENVIRONMENT``, ``GLOBUS_SDK_SERVICE_URL_TRANSFER`` /
    ``_AUTH``); ``transfer_base_url`` / ``auth_base_url`` override them. globus-sdk retries 429 and
    5xx itself (``max_retries``, sleeping at most ``max_retry_sleep_s``) before an error reaches here.
    No network call happens until the first method call.
    """

    name = "globus"
    raw_names = False  # the Transfer API speaks JSON: paths are UTF-8 text
    status_poll_s: float | None = None  # requests are rate-limited: the monitor backs off

    def __init__(
        self,
        client_id: str,
        client_secret: Secret | str,
        source_endpoint: str,
        destination_endpoint: str,
        destination_base: str = "/",
        *,
        deadline_s: float = 86400.0,
        transfer_base_url: str | None = None,
        auth_base_url: str | None = None,
        max_retries: int = 5,
        max_retry_sleep_s: float = 10.0,
        http_timeout_s: float = 60.0,
    ) -> None:
        self._client_id = client_id
        self._secret = client_secret if isinstance(client_secret, Secret) else Secret(client_secret)
        self._source = source_endpoint
        self._destination = destination_endpoint
        self._base = destination_base
        self._deadline_s = deadline_s
        self._urls = (transfer_base_url, auth_base_url)
        self._retry = (max_retries, max_retry_sleep_s)
        self._http_timeout_s = http_timeout_s
        self._auth: globus_sdk.ConfidentialAppAuthClient | None = None
        self._client: globus_sdk.TransferClient | None = None
        self._transports: list[RequestsTransport] = []

    def __repr__(self) -> str:
        return (
            f"GlobusTransfer(client_id={self._client_id!r}, client_secret={self._secret!r}, "
            f"source={self._source!r}, destination={self._destination!r})"
        )

    def new_submission_id(self, batch_id: str) -> str:
        """A fresh submission id from Globus; the caller records it before submitting."""
        with globus_boundary(f"batch {batch_id}: get a submission id"):
            return str(self._transfer().get_submission_id()["value"])

    def submit(
        self, batch_id: str, submission_id: str, items: Sequence[TransferItem], label: str
    ) -> str:
        """Submit the batch as one task; a repeated submission id returns the first task's id."""
        if not items:
            raise TransferPermanentError(f"batch {batch_id}: a transfer needs at least one item")
        deadline = datetime.now(UTC) + timedelta(seconds=self._deadline_s)
        data = globus_sdk.TransferData(
            self._source,
            self._destination,
            label=" ".join(label.split())[:128] or globus_sdk.MISSING,
            submission_id=submission_id,
            sync_level="checksum",
            verify_checksum=True,
            skip_source_errors=True,
            deadline=deadline.isoformat(timespec="seconds"),
            notify_on_succeeded=False,
            notify_on_failed=False,
            notify_on_inactive=False,
        )
        for item in items:
            data.add_item(item.source, self._destination_path(item))
        with globus_boundary(f"batch {batch_id}: submit"):
            result = self._transfer().submit_transfer(data)
        task_id = str(result["task_id"])
        log.info(
            "batch %s: task %s %s with %d files (submission %s)",
            batch_id,
            task_id,
            result.get("code"),
            len(items),
            submission_id,
        )
        return task_id

    def task(self, task_id: str) -> TaskState:
        """The task's state as Globus reports it."""
        with globus_boundary(f"task {task_id}: get status"):
            doc = self._transfer().get_task(task_id).data
        return task_state(doc, datetime.now(UTC))

    def outcomes(self, task_id: str, items: Sequence[TransferItem]) -> list[FileOutcome]:
        """One outcome per item of a final task, from its successful and skipped-error lists."""
        client = self._transfer()
        with globus_boundary(f"task {task_id}: read outcomes"):
            doc = client.get_task(task_id).data
            status = task_state(doc, datetime.now(UTC)).status
            if not status.is_final:
                raise TransferPermanentError(f"task {task_id} is {status}, not final")
            transferred = _PathIndex(client.paginated.task_successful_transfers(task_id).items())
            skipped = _PathIndex(client.paginated.task_skipped_errors(task_id).items())
        failure: str | None = None
        outcomes = []
        for item in items:
            destination = self._destination_path(item)
            if transferred.find(item.source, destination) is not None:
                outcomes.append(FileOutcome(item.key, True, None, None, False, None))
            elif (error := skipped.find(item.source, destination)) is not None:
                reason = f"{error.get('error_code')}: {error.get('error_details') or ''}".strip()
                outcomes.append(FileOutcome.failed(item.key, reason))
            elif status is TaskStatus.SUCCEEDED:
                outcomes.append(self._unlisted(item))
            else:
                failure = failure or self._failure_reason(task_id, doc)
                outcomes.append(FileOutcome.failed(item.key, failure))
        return outcomes

    def confirm(
        self, item: TransferItem, checksum: str | None = None, algorithm: str | None = None
    ) -> FileOutcome:
        """Whether the destination holds a file of the item's size (Globus verified its checksum
        when it copied or skipped it; stat gives no checksum to compare with ``checksum``)."""
        path = self._destination_path(item)
        try:
            with globus_boundary(f"stat {path}"):
                stat = self._transfer().operation_stat(self._destination, path).data
        except TransferNotFoundError:
            return FileOutcome.failed(item.key, f"absent at destination {path}")
        if stat.get("type") != "file":
            return FileOutcome.failed(item.key, f"destination {path} is a {stat.get('type')}")
        if stat.get("size") != item.size:
            return FileOutcome.failed(
                item.key, f"destination size {stat.get('size')} != {item.size} at {path}"
            )
        return FileOutcome(item.key, True, None, None, False, "destination size matches")

    def close(self) -> None:
        """Close the HTTP sessions; a later call opens new ones."""
        for transport in self._transports:
            transport.close()
        self._transports = []
        self._auth = self._client = None

    def _unlisted(self, item: TransferItem) -> FileOutcome:
        """A SUCCEEDED task's file that was not transferred: identical already, or lost."""
        confirmed = self.confirm(item)
        if not confirmed.ok:
            return FileOutcome.failed(item.key, f"not transferred: {confirmed.reason}")
        reason = "not transferred: already identical at the destination"
        return FileOutcome(item.key, True, None, None, True, reason)

    def _failure_reason(self, task_id: str, doc: dict[str, Any]) -> str:
        fatal = doc.get("fatal_error") or {}
        if fatal:
            return f"task {doc.get('status')}: {fatal.get('code')}: {fatal.get('description')}"
        with globus_boundary(f"task {task_id}: read events"):
            events = self._transfer().task_event_list(task_id, limit=20)
            error = next((e for e in events if e.get("is_error")), None)
        if error is None:
            return f"task {doc.get('status')} before this file was transferred"
        return f"task {doc.get('status')}: {error.get('code')}: {error.get('description')}"

    def _destination_path(self, item: TransferItem) -> str:
        relative = item.destination
        parts = relative.split("/")
        if not relative or relative.startswith("/") or ".." in parts:
            raise TransferPermanentError(f"{item.key}: bad destination path {relative!r}")
        return posixpath.join(self._base, relative)

    def _transfer(self) -> globus_sdk.TransferClient:
        """The transfer client, built on first use: getting its token is the first request."""
        if self._client is None:
            max_retries, max_sleep = self._retry
            if self._auth is None:
                self._transports = [
                    RequestsTransport(http_timeout=self._http_timeout_s) for _ in range(2)
                ]
                self._auth = globus_sdk.ConfidentialAppAuthClient(
                    self._client_id,
                    self._secret.reveal(),
                    base_url=self._urls[1],
                    transport=self._transports[0],
                    retry_config=RetryConfig(max_retries=max_retries, max_sleep=max_sleep),
                )
            with globus_boundary("authenticate with Globus Auth"):
                try:
                    authorizer = globus_sdk.ClientCredentialsAuthorizer(self._auth, TRANSFER_SCOPE)
                except ValueError as exc:  # the token answer did not hold exactly one token
                    raise TransferPermanentError(f"authenticate with Globus Auth: {exc}") from exc
            self._client = globus_sdk.TransferClient(
                authorizer=authorizer,
                base_url=self._urls[0],
                transport=self._transports[1],
                retry_config=RetryConfig(max_retries=max_retries, max_sleep=max_sleep),
            )
        return self._client


def task_state(doc: dict[str, Any], now: datetime) -> TaskState:
    """A Globus task document as a :class:`TaskState`."""
    try:
        status = TaskStatus(doc["status"])
    except ValueError:
        status = TaskStatus.ACTIVE  # an unknown status is treated as still in progress
    fatal = doc.get("fatal_error") or {}
    deadline = _parse_time(doc.get("deadline"))
    expired = fatal.get("code") == "EXPIRED" or bool(doc.get("subtasks_expired"))
    if not status.is_final and deadline is not None and deadline < now:
        expired = True
    return TaskState(
        task_id=str(doc["task_id"]),
        status=status,
        nice_status=doc.get("nice_status"),
        files=int(doc.get("files") or 0),
        files_transferred=int(doc.get("files_transferred") or 0),
        files_skipped=int(doc.get("files_skipped") or 0),
        faults=int(doc.get("faults") or 0),
        completion_time=_parse_time(doc.get("completion_time")),
        deadline_expired=expired,
    )


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value.replace(" ", "T"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _PathIndex:
    """Entries of a successful-transfers or skipped-errors list, by source and by destination."""

    def __init__(self, entries: Iterable[dict[str, Any]]) -> None:
        self._by_source: dict[str, dict[str, Any]] = {}
        self._by_destination: dict[str, dict[str, Any]] = {}
        for entry in entries:
            self._by_source[entry.get("source_path") or ""] = entry
            self._by_destination[entry.get("destination_path") or ""] = entry

    def find(self, source: str, destination: str) -> dict[str, Any] | None:
        return self._by_source.get(source) or self._by_destination.get(destination)
