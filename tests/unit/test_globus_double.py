"""The Globus Transfer API double: protocol shapes (against globus-sdk's canned data) and behaviour."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from globus_sdk.testing.data.auth.oauth2_client_credentials_tokens import RESPONSES as TOKENS
from globus_sdk.testing.data.transfer.endpoint_manager_task_successful_transfers import (
    RESPONSES as SUCCESSFUL,
)
from globus_sdk.testing.data.transfer.get_submission_id import RESPONSES as SUBMISSION_ID
from globus_sdk.testing.data.transfer.operation_stat import RESPONSES as STAT
from globus_sdk.testing.data.transfer.submit_transfer import RESPONSES as SUBMIT
from globus_sdk.testing.data.transfer.task_list import TASK_LIST_DOC
from globus_sdk.testing.models import RegisteredResponse

from tests.doubles.globus_api import TRANSFER_SCOPE, GlobusDouble

# Fields of a skipped_error and an event document, as the Transfer API documents them.
SKIPPED_ERROR_KEYS = {
    "DATA_TYPE",
    "checksum_algorithm",
    "destination_path",
    "error_code",
    "error_details",
    "error_time",
    "external_checksum",
    "is_delete_destination_extra",
    "is_directory",
    "is_symlink",
    "source_path",
}
EVENT_KEYS = {"DATA_TYPE", "code", "description", "details", "is_error", "time"}


class Api:
    """Raw HTTP against the double, authenticated as its client."""

    def __init__(self, double: GlobusDouble, session: requests.Session, root: Path) -> None:
        self.double = double
        self.session = session
        self.src_root, self.dst_root = root / "src", root / "dst"
        self.src = double.add_endpoint(self.src_root)
        self.dst = double.add_endpoint(self.dst_root)
        token = self.token().json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"

    def token(self, secret: str = "terra-test-secret") -> requests.Response:
        return self.session.post(
            self.double.url + "v2/oauth2/token",
            data={"grant_type": "client_credentials", "scope": TRANSFER_SCOPE},
            auth=(self.double.client_id, secret),
        )

    def get(self, resource: str, **params: Any) -> requests.Response:
        return self.session.get(self.double.url + resource.lstrip("/"), params=params)

    def submit(self, items: list[tuple[str, str]], **fields: Any) -> requests.Response:
        doc: dict[str, Any] = {
            "DATA_TYPE": "transfer",
            "submission_id": self.get("/v0.10/submission_id").json()["value"],
            "source_endpoint": self.src,
            "destination_endpoint": self.dst,
            "DATA": [
                {"DATA_TYPE": "transfer_item", "source_path": s, "destination_path": d}
                for s, d in items
            ],
            **fields,
        }
        return self.session.post(self.double.url + "v0.10/transfer", json=doc)


@pytest.fixture
def double() -> Iterator[GlobusDouble]:
    with GlobusDouble(page_size=2) as started:
        yield started


@pytest.fixture
def api(double: GlobusDouble, tmp_path: Path) -> Iterator[Api]:
    with requests.Session() as session:
        yield Api(double, session, tmp_path)


def put(root: Path, rel: str, data: bytes) -> str:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return "/" + rel.lstrip("/")


def canned(responses: Any, case: str = "default") -> RegisteredResponse:
    response = responses.lookup(case)
    assert isinstance(response, RegisteredResponse)
    return response


def canned_json(responses: Any, case: str = "default") -> dict[str, Any]:
    doc = canned(responses, case).json
    assert isinstance(doc, dict)
    return doc


def assert_shape(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Every canned key is present, with a value of a compatible JSON type."""
    missing = set(theirs) - set(ours)
    assert not missing, f"missing keys {sorted(missing)}"
    for key, value in theirs.items():
        if value is not None and ours[key] is not None:
            assert type(ours[key]) is type(value) or {type(ours[key]), type(value)} <= {
                int,
                float,
            }, key


def finished_task(
    api: Api, double: GlobusDouble, items: list[tuple[str, str]], **fields: Any
) -> str:
    task_id: str = api.submit(items, **fields).json()["task_id"]
    double.wait_status(task_id, "SUCCEEDED", "FAILED")
    return task_id


def test_token_answer_has_the_canned_shape(api: Api) -> None:
    answer = api.token()
    assert answer.status_code == 200
    assert set(answer.json()) == set(canned_json(TOKENS))
    assert answer.json()["resource_server"] == "transfer.api.globus.org"


def test_wrong_client_secret_and_missing_token_are_refused(api: Api, double: GlobusDouble) -> None:
    assert api.token(secret="wrong").status_code == 401
    answer = requests.get(double.url + "v0.10/submission_id", timeout=5)
    assert answer.status_code == 401
    assert set(answer.json()) == {"code", "message", "request_id", "resource"}


def test_submission_id_and_submit_have_the_canned_shapes(api: Api, double: GlobusDouble) -> None:
    assert_shape(api.get("/v0.10/submission_id").json(), canned_json(SUBMISSION_ID))
    source = put(api.src_root, "a.txt", b"a")
    answer = api.submit([(source, "/out/a.txt")])
    assert answer.status_code == 202
    assert set(answer.json()) == set(canned_json(SUBMIT))
    assert answer.json()["code"] == "Accepted"


def test_errors_have_the_canned_shape(api: Api) -> None:
    failure = canned_json(SUBMIT, "failure")
    answer = api.submit([])
    assert answer.status_code == canned(SUBMIT, "failure").status
    assert set(answer.json()) == set(failure)
    assert answer.json()["code"] == failure["code"]


def test_task_document_has_the_canned_fields(api: Api, double: GlobusDouble) -> None:
    source = put(api.src_root, "t.txt", b"t")
    task_id = finished_task(api, double, [(source, "/t.txt")], sync_level=3, verify_checksum=True)
    doc = api.get(f"/v0.10/task/{task_id}").json()
    listed: Any = TASK_LIST_DOC["DATA"]
    assert_shape(doc, listed[0])
    assert doc["DATA_TYPE"] == "task"
    assert (doc["status"], doc["nice_status"], doc["files"], doc["files_transferred"]) == (
        "SUCCEEDED",
        None,
        1,
        1,
    )
    assert doc["completion_time"] is not None and doc["sync_level"] == 3


def test_successful_transfers_are_paged_by_marker(api: Api, double: GlobusDouble) -> None:
    items = [(put(api.src_root, f"p/{i}", b"x" * i), f"/q/{i}") for i in range(5)]
    task_id = finished_task(api, double, items)
    pages: list[dict[str, Any]] = []
    marker = None
    while True:
        params: dict[str, Any] = {"marker": marker} if marker is not None else {}
        page = api.get(f"/v0.10/task/{task_id}/successful_transfers", **params).json()
        pages.append(page)
        marker = page["next_marker"]
        if marker is None:
            break
    template = canned_json(SUCCESSFUL)
    for page in pages:
        assert set(page) == set(template)
        for entry in page["DATA"]:
            assert set(entry) == set(template["DATA"][0])
    assert [len(p["DATA"]) for p in pages] == [2, 2, 1]
    assert [e["source_path"] for p in pages for e in p["DATA"]] == [s for s, _ in items]
    assert (api.dst_root / "q/4").read_bytes() == b"xxxx"


def test_stat_and_ls_have_the_canned_shapes(api: Api, double: GlobusDouble) -> None:
    put(api.src_root, "dir/f.txt", b"four")
    stat = api.get(f"/v0.10/operation/endpoint/{api.src}/stat", path="/dir/f.txt")
    assert set(stat.json()) == set(canned_json(STAT))
    assert (stat.json()["type"], stat.json()["size"]) == ("file", 4)
    missing = api.get(f"/v0.10/operation/endpoint/{api.src}/stat", path="/nope")
    assert missing.status_code == canned(STAT, "not_found").status
    assert set(missing.json()) == set(canned_json(STAT, "not_found"))
    assert missing.json()["code"] == "NotFound"
    listing = api.get(f"/v0.10/operation/endpoint/{api.src}/ls", path="/dir").json()
    assert listing["DATA_TYPE"] == "file_list"
    assert [(f["name"], f["size"]) for f in listing["DATA"]] == [("f.txt", 4)]


def test_identical_destination_is_skipped_with_sync_level_checksum(
    api: Api, double: GlobusDouble
) -> None:
    source = put(api.src_root, "same", b"same")
    put(api.dst_root, "same", b"same")
    changed = put(api.src_root, "changed", b"new")
    put(api.dst_root, "changed", b"old")
    task_id = finished_task(api, double, [(source, "/same"), (changed, "/changed")], sync_level=3)
    doc = api.get(f"/v0.10/task/{task_id}").json()
    assert (doc["files_transferred"], doc["files_skipped"]) == (1, 1)
    listed = api.get(f"/v0.10/task/{task_id}/successful_transfers").json()["DATA"]
    assert [e["source_path"] for e in listed] == ["/changed"]
    assert (api.dst_root / "changed").read_bytes() == b"new"


def test_repeated_submission_id_is_accepted_once(api: Api, double: GlobusDouble) -> None:
    source = put(api.src_root, "r", b"r")
    submission_id = api.get("/v0.10/submission_id").json()["value"]
    first = api.submit([(source, "/r")], submission_id=submission_id).json()
    again = api.submit([(source, "/r")], submission_id=submission_id).json()
    assert (first["code"], again["code"]) == ("Accepted", "Duplicate")
    assert again["task_id"] == first["task_id"]
    assert double.task_ids() == [first["task_id"]]
    unknown = api.submit([(source, "/r")], submission_id=str(uuid.uuid4()))
    assert unknown.status_code == 400
    assert double.submits() == [(submission_id, "Accepted"), (submission_id, "Duplicate")]


def test_lost_submit_response_leaves_the_task_for_a_repeat(api: Api, double: GlobusDouble) -> None:
    source = put(api.src_root, "l", b"l")
    submission_id = api.get("/v0.10/submission_id").json()["value"]
    double.lose_next_submit_response(502)
    assert api.submit([(source, "/l")], submission_id=submission_id).status_code == 502
    [task_id] = double.task_ids()
    repeat = api.submit([(source, "/l")], submission_id=submission_id).json()
    assert (repeat["code"], repeat["task_id"]) == ("Duplicate", task_id)


def test_injected_status_codes_with_retry_after(api: Api) -> None:
    api.double.fail_requests(429, 2, retry_after=3, path="/v0.10/submission_id")
    api.double.fail_requests(503, 1)
    first = api.get("/v0.10/submission_id")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert first.json()["code"] == "RequestLimitExceeded"
    assert api.get("/v0.10/submission_id").status_code == 429
    assert api.get("/v0.10/submission_id").status_code == 503
    assert api.get("/v0.10/submission_id").status_code == 200
    assert [r.status for r in api.double.requests[-4:]] == [429, 429, 503, 200]


def test_task_can_be_made_to_fail(api: Api, double: GlobusDouble) -> None:
    items = [(put(api.src_root, f"f{i}", b"f"), f"/f{i}") for i in range(3)]
    double.fail_next_task("ENDPOINT_ERROR", "disk on fire", after_files=1)
    task_id = finished_task(api, double, items)
    doc = api.get(f"/v0.10/task/{task_id}").json()
    assert doc["status"] == "FAILED"
    assert doc["fatal_error"] == {"code": "ENDPOINT_ERROR", "description": "disk on fire"}
    assert doc["files_transferred"] == 1
    events = api.get(f"/v0.10/task/{task_id}/event_list").json()
    assert events["DATA_TYPE"] == "event_list" and set(events["DATA"][0]) == EVENT_KEYS
    assert events["DATA"][0]["code"] == "ENDPOINT_ERROR" and events["DATA"][0]["is_error"]


def test_failing_paths_become_skipped_errors(api: Api, double: GlobusDouble) -> None:
    good = put(api.src_root, "good", b"g")
    denied = put(api.src_root, "denied", b"d")
    double.fail_paths(denied)
    items = [(good, "/good"), (denied, "/denied"), ("/missing", "/missing")]
    task_id = finished_task(api, double, items, skip_source_errors=True)
    doc = api.get(f"/v0.10/task/{task_id}").json()
    assert (doc["status"], doc["files_transferred"], doc["subtasks_skipped_errors"]) == (
        "SUCCEEDED",
        1,
        2,
    )
    skipped = api.get(f"/v0.10/task/{task_id}/skipped_errors").json()
    assert skipped["DATA_TYPE"] == "skipped_errors" and skipped["next_marker"] is None
    assert all(set(e) == SKIPPED_ERROR_KEYS for e in skipped["DATA"])
    codes = {e["source_path"]: e["error_code"] for e in skipped["DATA"]}
    assert codes == {"/denied": "PERMISSION_DENIED", "/missing": "FILE_NOT_FOUND"}


def test_missing_source_fails_the_task_without_skip_source_errors(
    api: Api, double: GlobusDouble
) -> None:
    task_id = finished_task(api, double, [("/missing", "/missing")])
    doc = api.get(f"/v0.10/task/{task_id}").json()
    assert (doc["status"], doc["fatal_error"]["code"]) == ("FAILED", "FILE_NOT_FOUND")


def test_inactive_task_resumes(api: Api, double: GlobusDouble) -> None:
    items = [(put(api.src_root, f"i{i}", b"i"), f"/i{i}") for i in range(2)]
    double.pause_next_task(after_files=1)
    task_id = api.submit(items).json()["task_id"]
    double.wait_status(task_id, "INACTIVE")
    doc = api.get(f"/v0.10/task/{task_id}").json()
    assert (doc["nice_status"], doc["files_transferred"], doc["is_ok"]) == ("AUTH", 1, False)
    double.resume_task(task_id)
    double.wait_status(task_id, "SUCCEEDED")


def test_deadline_expires_on_the_double_clock(api: Api, double: GlobusDouble) -> None:
    source = put(api.src_root, "d", b"d")
    with double.held():
        task_id = api.submit([(source, "/d")], deadline="2000-01-01T00:00:00+00:00").json()[
            "task_id"
        ]
        assert api.get(f"/v0.10/task/{task_id}").json()["status"] == "ACTIVE"
    double.wait_status(task_id, "FAILED")
    doc = api.get(f"/v0.10/task/{task_id}").json()
    assert (doc["fatal_error"]["code"], doc["subtasks_expired"]) == ("EXPIRED", 1)


def test_unknown_task_is_not_found(api: Api) -> None:
    answer = api.get(f"/v0.10/task/{uuid.uuid4()}")
    assert (answer.status_code, answer.json()["code"]) == (404, "TaskNotFound")


def test_stopped_double_refuses_connections(tmp_path: Path) -> None:
    with GlobusDouble() as double:
        url = double.url
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "v0.10/submission_id", timeout=5)
