"""The Globus backend through the real globus-sdk, against the Globus Transfer API double."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.transfer.base import (
    TaskState,
    TaskStatus,
    TransferBackend,
    TransferItem,
    TransferNotFoundError,
    TransferPermanentError,
    TransferTransientError,
)
from consumers.transfer.globus import GlobusTransfer, task_state
from terra_xfer.config import Secret
from tests.doubles.globus_api import GlobusDouble

SECRET = "s3cr3t-0f-the-terra-client"


class Site:
    """The double with a source and a destination endpoint, and backends pointed at it."""

    def __init__(self, double: GlobusDouble, root: Path) -> None:
        self.double = double
        self.src_root, self.dst_root = root / "cache", root / "hpc"
        self.src = double.add_endpoint(self.src_root)
        self.dst = double.add_endpoint(self.dst_root)
        self._backends: list[GlobusTransfer] = []

    def file(self, rel: str, data: bytes) -> TransferItem:
        path = self.src_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        st = path.stat()
        return TransferItem(f"ua-mac/{rel}", f"/{rel}", f"raw/{rel}", st.st_size, st.st_mtime_ns)

    def at_destination(self, item: TransferItem) -> Path:
        return self.dst_root / "archive" / item.destination

    def backend(self, **options: Any) -> GlobusTransfer:
        settings: dict[str, Any] = {
            "transfer_base_url": self.double.url,
            "auth_base_url": self.double.url,
            "max_retries": 2,
            "max_retry_sleep_s": 0.01,
            **options,
        }
        secret = settings.pop("secret", SECRET)
        backend = GlobusTransfer(
            self.double.client_id, secret, self.src, self.dst, "/archive", **settings
        )
        self._backends.append(backend)
        return backend

    def close(self) -> None:
        for backend in self._backends:
            backend.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with GlobusDouble(client_secret=SECRET, page_size=2) as double:
        site = Site(double, tmp_path)
        yield site
        site.close()
        assert double.errors == []


def submit(backend: TransferBackend, items: list[TransferItem], batch: str = "b1") -> str:
    return backend.submit(batch, backend.new_submission_id(batch), items, f"batch {batch}")


def finish(site: Site, backend: TransferBackend, task_id: str) -> TaskState:
    """Wait for the double to end the task, then read its state through the backend."""
    site.double.wait_status(task_id, "SUCCEEDED", "FAILED")
    return backend.task(task_id)


def statuses(site: Site, path: str) -> list[int]:
    return [r.status for r in site.double.requests if r.path.startswith(path)]


def test_batch_is_transferred_with_checksum_sync(site: Site) -> None:
    backend = site.backend()
    items = [site.file(f"s/{i}.bin", bytes([i]) * (i + 1)) for i in range(5)]
    task_id = backend.submit("b1", backend.new_submission_id("b1"), items, "  batch b1\nfrom p3 ")
    state = finish(site, backend, task_id)
    assert (state.status, state.files, state.files_transferred, state.deadline_expired) == (
        TaskStatus.SUCCEEDED,
        5,
        5,
        False,
    )
    outcomes = backend.outcomes(task_id, items)
    assert [(o.key, o.ok, o.skipped_identical) for o in outcomes] == [
        (i.key, True, False) for i in items
    ]
    for item in items:
        assert (
            site.at_destination(item).read_bytes() == (site.src_root / item.source[1:]).read_bytes()
        )
    doc = site.double.task(task_id)
    assert (doc["label"], doc["sync_level"], doc["verify_checksum"]) == (
        "batch b1 from p3",
        3,
        True,
    )
    assert doc["skip_source_errors"] is True and doc["deadline"] is not None


def test_rate_limit_is_retried_by_the_sdk(site: Site) -> None:
    backend = site.backend()
    task_id = submit(backend, [site.file("r.json", b"r")])
    site.double.fail_requests(429, 2, retry_after=1, path="/v0.10/task/")
    assert finish(site, backend, task_id).status is TaskStatus.SUCCEEDED
    assert statuses(site, "/v0.10/task/")[:3] == [429, 429, 200]


def test_persistent_rate_limit_is_transient_with_retry_after(site: Site) -> None:
    backend = site.backend()
    task_id = submit(backend, [site.file("r.json", b"r")])
    site.double.fail_requests(429, 3, retry_after=7, path="/v0.10/task/")
    with pytest.raises(TransferTransientError) as raised:
        backend.task(task_id)
    assert raised.value.retry_after == 7.0
    assert "429" in str(raised.value)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_then_transient(site: Site, status: int) -> None:
    backend = site.backend()
    site.double.fail_requests(status, 1, path="/v0.10/submission_id")
    assert backend.new_submission_id("b1")
    site.double.fail_requests(status, 3, path="/v0.10/submission_id")
    with pytest.raises(TransferTransientError):
        backend.new_submission_id("b1")


def test_slow_response_times_out_and_is_retried(site: Site) -> None:
    backend = site.backend(http_timeout_s=0.3)
    task_id = submit(backend, [site.file("slow.json", b"s")])
    site.double.wait_status(task_id, "SUCCEEDED")
    site.double.slow_requests(30.0, 1, path="/v0.10/task/")
    assert backend.task(task_id).status is TaskStatus.SUCCEEDED
    impatient = site.backend(http_timeout_s=0.3, max_retries=0)
    site.double.slow_requests(30.0, 1, path="/v0.10/task/")
    with pytest.raises(TransferTransientError, match="cannot reach Globus"):
        impatient.task(task_id)


def test_failed_task_fails_its_unfinished_files(site: Site) -> None:
    backend = site.backend()
    items = [site.file(f"f/{i}", b"f") for i in range(3)]
    site.double.fail_next_task("ENDPOINT_ERROR", "destination disk full", after_files=1)
    task_id = submit(backend, items)
    state = finish(site, backend, task_id)
    assert (state.status, state.files_transferred, state.deadline_expired) == (
        TaskStatus.FAILED,
        1,
        False,
    )
    first, *rest = backend.outcomes(task_id, items)
    assert first.ok
    assert all(
        not o.ok and "ENDPOINT_ERROR: destination disk full" in (o.reason or "") for o in rest
    )


def test_failure_reason_comes_from_the_event_list_without_a_fatal_error(site: Site) -> None:
    backend = site.backend()
    items = [site.file("ev/1", b"1")]
    site.double.fail_next_task("CONNECT_FAILED", "endpoint offline", report_fatal_error=False)
    task_id = submit(backend, items)
    assert finish(site, backend, task_id).status is TaskStatus.FAILED
    assert site.double.task(task_id)["fatal_error"] is None
    [outcome] = backend.outcomes(task_id, items)
    assert not outcome.ok and "CONNECT_FAILED: endpoint offline" in (outcome.reason or "")


def test_partial_success_reports_skipped_errors(site: Site) -> None:
    backend = site.backend()
    good, denied, gone = (site.file(n, n.encode()) for n in ("good", "denied", "gone"))
    (site.src_root / "gone").unlink()
    site.double.fail_paths(denied.source)
    items = [good, denied, gone]
    task_id = submit(backend, items)
    assert finish(site, backend, task_id).status is TaskStatus.SUCCEEDED
    ok, refused, missing = backend.outcomes(task_id, items)
    assert ok.ok
    assert not refused.ok and (refused.reason or "").startswith("PERMISSION_DENIED")
    assert not missing.ok and (missing.reason or "").startswith("FILE_NOT_FOUND")


def test_inactive_task_is_reported_then_resumes(site: Site) -> None:
    backend = site.backend()
    items = [site.file(f"i/{i}", b"i") for i in range(3)]
    site.double.pause_next_task(after_files=1)
    task_id = submit(backend, items)
    site.double.wait_status(task_id, "INACTIVE")
    state = backend.task(task_id)
    assert (state.status, state.nice_status, state.deadline_expired) == (
        TaskStatus.INACTIVE,
        "AUTH",
        False,
    )
    with pytest.raises(TransferPermanentError, match="not final"):
        backend.outcomes(task_id, items)
    site.double.resume_task(task_id)
    assert finish(site, backend, task_id).status is TaskStatus.SUCCEEDED
    assert all(o.ok for o in backend.outcomes(task_id, items))


def test_inactive_task_past_its_deadline_fails_as_expired(site: Site) -> None:
    backend = site.backend(deadline_s=600)
    items = [site.file(f"e/{i}", b"e") for i in range(2)]
    site.double.pause_next_task(after_files=1)
    task_id = submit(backend, items)
    site.double.wait_status(task_id, "INACTIVE")
    site.double.advance_clock(3600)
    state = finish(site, backend, task_id)
    assert (state.status, state.deadline_expired) == (TaskStatus.FAILED, True)
    done, expired = backend.outcomes(task_id, items)
    assert done.ok and not expired.ok and "EXPIRED" in (expired.reason or "")


def test_lost_submit_response_is_repeated_with_the_same_submission_id(site: Site) -> None:
    backend = site.backend()
    items = [site.file("once.json", b"once")]
    site.double.lose_next_submit_response(502)
    task_id = submit(backend, items)
    assert site.double.task_ids() == [task_id]
    assert statuses(site, "/v0.10/transfer") == [502, 200]
    assert finish(site, backend, task_id).files_transferred == 1


def test_caller_resubmission_after_a_transient_error_finds_the_same_task(site: Site) -> None:
    backend = site.backend(max_retries=0)
    items = [site.file("again.json", b"again")]
    submission_id = backend.new_submission_id("b1")
    site.double.lose_next_submit_response(503)
    with pytest.raises(TransferTransientError):
        backend.submit("b1", submission_id, items, "b1")
    task_id = backend.submit("b1", submission_id, items, "b1")
    assert backend.submit("b1", submission_id, items, "b1") == task_id
    assert site.double.task_ids() == [task_id]


def test_file_not_listed_but_identical_at_destination_is_confirmed(site: Site) -> None:
    backend = site.backend()
    same, new = site.file("same", b"identical"), site.file("new", b"new")
    site.at_destination(same).parent.mkdir(parents=True)
    site.at_destination(same).write_bytes(b"identical")
    task_id = submit(backend, [same, new])
    state = finish(site, backend, task_id)
    assert (state.files_transferred, state.files_skipped) == (1, 1)
    skipped, copied = backend.outcomes(task_id, [same, new])
    assert skipped.ok and skipped.skipped_identical and "identical" in (skipped.reason or "")
    assert copied.ok and not copied.skipped_identical


def test_file_neither_listed_nor_at_destination_fails(site: Site) -> None:
    backend = site.backend()
    item = site.file("lost", b"lost")
    site.at_destination(item).parent.mkdir(parents=True)
    site.at_destination(item).write_bytes(b"lost")
    task_id = submit(backend, [item])
    finish(site, backend, task_id)
    site.at_destination(item).unlink()
    [outcome] = backend.outcomes(task_id, [item])
    assert not outcome.ok and "absent at destination" in (outcome.reason or "")


def test_confirm_checks_presence_and_size(site: Site) -> None:
    backend = site.backend()
    item = site.file("c.json", b"1234")
    assert "absent" in (backend.confirm(item).reason or "")
    site.at_destination(item).parent.mkdir(parents=True)
    site.at_destination(item).write_bytes(b"123")
    assert "size 3 != 4" in (backend.confirm(item).reason or "")
    site.at_destination(item).write_bytes(b"1234")
    assert backend.confirm(item).ok


def test_refusals_are_permanent(site: Site) -> None:
    backend = site.backend()
    with pytest.raises(TransferPermanentError, match="at least one item"):
        backend.submit("b1", backend.new_submission_id("b1"), [], "empty")
    escaping = TransferItem("k", "/a", "../../etc/passwd", 1, 1)
    with pytest.raises(TransferPermanentError, match="bad destination"):
        backend.submit("b1", backend.new_submission_id("b1"), [escaping], "bad")
    with pytest.raises(TransferNotFoundError):
        backend.task(str(uuid.uuid4()))


def test_outcomes_need_a_final_task(site: Site) -> None:
    backend = site.backend()
    items = [site.file("h.json", b"h")]
    with site.double.held():
        task_id = submit(backend, items)
        assert backend.task(task_id).status is TaskStatus.ACTIVE
        with pytest.raises(TransferPermanentError, match="not final"):
            backend.outcomes(task_id, items)


def test_secret_never_reaches_logs_messages_or_repr(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    basic = base64.b64encode(f"{site.double.client_id}:{SECRET}".encode()).decode()
    caplog.set_level(logging.DEBUG)
    backend = site.backend(secret=Secret(SECRET))
    task_id = submit(backend, [site.file("x.json", b"x")])
    finish(site, backend, task_id)
    wrong = site.backend(secret="not-the-" + SECRET)
    with pytest.raises(TransferPermanentError) as raised:
        wrong.new_submission_id("b1")
    assert "401" in str(raised.value)
    texts = [str(raised.value), repr(backend), repr(wrong)] + [
        r.getMessage() for r in caplog.records
    ]
    assert caplog.records
    assert not [t for t in texts if SECRET in t or basic in t]
    assert "***" in repr(backend)


def test_service_urls_come_from_the_environment(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in site.double.env().items():
        monkeypatch.setenv(name, value)
    backend = site.backend(transfer_base_url=None, auth_base_url=None)
    assert uuid.UUID(backend.new_submission_id("b1"))


def test_no_request_is_made_before_the_first_call(site: Site) -> None:
    site.backend()
    assert site.double.requests == []


def test_task_state_reads_deadlines_and_unknown_statuses() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    base = {"task_id": "t", "files": 2, "files_transferred": 1, "completion_time": None}
    past = (now - timedelta(seconds=1)).isoformat()
    assert task_state({**base, "status": "INACTIVE", "deadline": past}, now).deadline_expired
    assert not task_state({**base, "status": "SUCCEEDED", "deadline": past}, now).deadline_expired
    expired = {**base, "status": "FAILED", "fatal_error": {"code": "EXPIRED", "description": ""}}
    assert task_state(expired, now).deadline_expired
    assert task_state({**base, "status": "PAUSED_SOMEHOW"}, now).status is TaskStatus.ACTIVE
    done = task_state(
        {**base, "status": "SUCCEEDED", "completion_time": "2024-05-01 10:00:00+00:00"}, now
    )
    assert done.completion_time == datetime(2024, 5, 1, 10, tzinfo=UTC)
