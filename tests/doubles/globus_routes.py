"""Request routes of the Globus double: the Transfer API v0.10 subset and the Auth token endpoint.

Each route takes the parsed request and returns ``(status, document)`` or raises :class:`ApiError`,
which the server answers with the API's error document ``{"code", "message", "request_id",
"resource"}``. Documents follow the shapes of the real services (see globus-sdk's canned data).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.doubles.globus_tasks import Endpoint, Engine, Task, TaskPlan, iso

TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"

Reply = tuple[int, dict[str, Any]]


class ApiError(Exception):
    """An error answered as the Transfer API's error document."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Routes:
    """The services' state (endpoints, tokens, submission ids, planned task faults) and routes."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float],
        client_id: str,
        client_secret: str,
        page_size: int,
    ) -> None:
        self.engine = engine
        self.client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self.page_size = page_size
        self.endpoints: dict[str, Endpoint] = {}
        self.plans: list[TaskPlan] = []
        self.lose_submit: list[int] = []
        self._tokens: set[str] = set()
        self._submission_ids: set[str] = set()
        self._by_submission: dict[str, str] = {}
        self.submits: list[tuple[str, str]] = []  # (submission id, "Accepted" or "Duplicate")

    def dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Reply:
        if method == "POST" and path == "/v2/oauth2/token":
            return self._token(headers, body)
        self._check_bearer(headers)
        for route_method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and method == route_method:
                return handler(*match.groups(), query=query, body=body)
        raise ApiError(404, "ClientError.NotFound", f"no route for {method} {path}")

    def _routes(self) -> list[tuple[str, str, Callable[..., Reply]]]:
        task = r"/v0\.10/task/([^/]+)"
        operation = r"/v0\.10/operation/endpoint/([^/]+)"
        return [
            ("GET", r"/v0\.10/submission_id", self._submission_id),
            ("POST", r"/v0\.10/transfer", self._submit),
            ("GET", task, self._get_task),
            ("GET", task + "/successful_transfers", self._successful),
            ("GET", task + "/skipped_errors", self._skipped),
            ("GET", task + "/event_list", self._event_list),
            ("GET", operation + "/stat", self._stat),
            ("GET", operation + "/ls", self._ls),
        ]

    def _token(self, headers: dict[str, str], body: bytes) -> Reply:
        expected = base64.b64encode(f"{self.client_id}:{self._client_secret}".encode()).decode()
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if headers.get("authorization") != f"Basic {expected}":
            return _auth_error(401, "invalid_client", "invalid client credentials")
        if form.get("grant_type") != "client_credentials":
            return _auth_error(400, "unsupported_grant_type", "only client_credentials is offered")
        token = uuid.uuid4().hex
        with self.engine.lock:
            self._tokens.add(token)
        return 200, {
            "access_token": token,
            "scope": form.get("scope", TRANSFER_SCOPE),
            "expires_in": 172800,
            "token_type": "Bearer",
            "resource_server": "transfer.api.globus.org",
            "other_tokens": [],
        }

    def _check_bearer(self, headers: dict[str, str]) -> None:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        with self.engine.lock:
            if token not in self._tokens:
                raise ApiError(401, "AuthenticationFailed", "Token is not active")

    def _submission_id(self, *, query: dict[str, str], body: bytes) -> Reply:
        value = str(uuid.uuid4())
        with self.engine.lock:
            self._submission_ids.add(value)
        return 200, {"DATA_TYPE": "submission_id", "value": value}

    def _submit(self, *, query: dict[str, str], body: bytes) -> Reply:
        doc = _json_body(body)
        if doc.get("DATA_TYPE") != "transfer":
            raise ApiError(400, "ClientError.BadRequest", "DATA_TYPE must be 'transfer'")
        items = doc.get("DATA") or []
        if not items:
            raise ApiError(
                400,
                "ClientError.BadRequest.NoTransferItems",
                "A transfer requires at least one item",
            )
        submission_id = str(doc.get("submission_id", ""))
        source = self._endpoint(str(doc.get("source_endpoint")))
        destination = self._endpoint(str(doc.get("destination_endpoint")))
        with self.engine.lock:
            if submission_id not in self._submission_ids:
                raise ApiError(
                    400, "ClientError.BadRequest", f"Invalid submission_id {submission_id!r}"
                )
            existing = self._by_submission.get(submission_id)
            if existing is not None:
                self.submits.append((submission_id, "Duplicate"))
                return 200, _transfer_result("Duplicate", submission_id, existing)
            task = self._new_task(doc, submission_id, source, destination, items)
            self._by_submission[submission_id] = task.task_id
            self.submits.append((submission_id, "Accepted"))
            self.engine.add(task)
            lost = self.lose_submit.pop(0) if self.lose_submit else None
        if lost is not None:
            raise ApiError(lost, "InternalError", "the response to this submission was lost")
        return 202, _transfer_result("Accepted", submission_id, task.task_id)

    def _new_task(
        self,
        doc: dict[str, Any],
        submission_id: str,
        source: Endpoint,
        destination: Endpoint,
        items: list[dict[str, Any]],
    ) -> Task:
        for item in items:
            if item.get("DATA_TYPE") != "transfer_item" or item.get("recursive"):
                raise ApiError(
                    400, "ClientError.BadRequest", "only file transfer_items are supported"
                )
        deadline = doc.get("deadline")
        return Task(
            task_id=str(uuid.uuid4()),
            submission_id=submission_id,
            label=doc.get("label"),
            source=source,
            destination=destination,
            items=[(i["source_path"], i["destination_path"]) for i in items],
            sync_level=doc.get("sync_level"),
            verify_checksum=bool(doc.get("verify_checksum", False)),
            skip_source_errors=bool(doc.get("skip_source_errors", False)),
            deadline=datetime.fromisoformat(deadline).timestamp() if deadline else None,
            request_time=self._clock(),
            plan=self.plans.pop(0) if self.plans else TaskPlan(),
        )

    def _task(self, task_id: str) -> Task:
        task = self.engine.tasks.get(task_id)
        if task is None:
            raise ApiError(404, "TaskNotFound", f"Task {task_id} not found")
        return task

    def _get_task(self, task_id: str, *, query: dict[str, str], body: bytes) -> Reply:
        with self.engine.lock:
            return 200, self._task(task_id).doc()

    def _successful(self, task_id: str, *, query: dict[str, str], body: bytes) -> Reply:
        with self.engine.lock:
            return 200, self._page("successful_transfers", self._task(task_id).successful, query)

    def _skipped(self, task_id: str, *, query: dict[str, str], body: bytes) -> Reply:
        with self.engine.lock:
            return 200, self._page("skipped_errors", self._task(task_id).skipped_errors, query)

    def _page(
        self, data_type: str, entries: list[dict[str, Any]], query: dict[str, str]
    ) -> dict[str, Any]:
        """Marker paging as the real API does: ``next_marker`` is null on the last page."""
        marker = int(query.get("marker") or 0)
        end = marker + self.page_size
        return {
            "DATA_TYPE": data_type,
            "marker": marker,
            "next_marker": end if end < len(entries) else None,
            "DATA": [dict(e) for e in entries[marker:end]],
        }

    def _event_list(self, task_id: str, *, query: dict[str, str], body: bytes) -> Reply:
        offset, limit = int(query.get("offset") or 0), int(query.get("limit") or 10)
        with self.engine.lock:
            events = list(reversed(self._task(task_id).events))
        return 200, {
            "DATA_TYPE": "event_list",
            "offset": offset,
            "limit": limit,
            "total": len(events),
            "DATA": events[offset : offset + limit],
        }

    def _stat(self, endpoint_id: str, *, query: dict[str, str], body: bytes) -> Reply:
        local = self._local_path(endpoint_id, query)
        if not local.exists():
            raise ApiError(404, "NotFound", f"Path not found: {query['path']}")
        return 200, _file_doc(local)

    def _ls(self, endpoint_id: str, *, query: dict[str, str], body: bytes) -> Reply:
        local = self._local_path(endpoint_id, query)
        if not local.is_dir():
            raise ApiError(404, "ClientError.NotFound", f"Directory not found: {query['path']}")
        entries = [_file_doc(p) for p in sorted(local.iterdir())]
        path = query["path"].rstrip("/") + "/"
        return 200, {
            "DATA_TYPE": "file_list",
            "endpoint": endpoint_id,
            "path": path,
            "absolute_path": path,
            "rename_supported": True,
            "symlink_supported": False,
            "length": len(entries),
            "total": len(entries),
            "offset": 0,
            "limit": 100000,
            "DATA": entries,
        }

    def _endpoint(self, endpoint_id: str) -> Endpoint:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise ApiError(404, "EndpointNotFound", f"No such endpoint {endpoint_id}")
        return endpoint

    def _local_path(self, endpoint_id: str, query: dict[str, str]) -> Path:
        path = query.get("path")
        if not path:
            raise ApiError(400, "ClientError.BadRequest", "path is required")
        local = self._endpoint(endpoint_id).resolve(path)
        if local is None:
            raise ApiError(403, "EndpointPermissionDenied", f"Path not allowed: {path}")
        return local


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, "ClientError.BadRequest", "body is not JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "ClientError.BadRequest", "body must be a JSON object")
    return doc


def _auth_error(status: int, error: str, detail: str) -> Reply:
    """Globus Auth's error answer: an OAuth ``error`` plus an ``errors`` array."""
    code = error.upper()
    return status, {
        "error": error,
        "errors": [{"status": str(status), "code": code, "detail": detail}],
    }


def error_doc(code: str, message: str, resource: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "request_id": uuid.uuid4().hex[:9],
        "resource": resource,
    }


def _transfer_result(code: str, submission_id: str, task_id: str) -> dict[str, Any]:
    accepted = code == "Accepted"
    return {
        "DATA_TYPE": "transfer_result",
        "code": code,
        "message": (
            "The transfer has been accepted and a task has been created and queued for execution"
            if accepted
            else "A transfer with this submission_id was already accepted"
        ),
        "request_id": uuid.uuid4().hex[:9],
        "resource": "/v0.10/transfer",
        "submission_id": submission_id,
        "task_id": task_id,
        "task_link": {
            "DATA_TYPE": "link",
            "href": f"/v0.10/task/{task_id}?format=json",
            "rel": "related",
            "resource": "task",
            "title": "related task",
        },
    }


def _file_doc(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "DATA_TYPE": "file",
        "name": path.name,
        "type": "dir" if path.is_dir() else "file",
        "size": st.st_size,
        "last_modified": (iso(st.st_mtime) or "").replace("T", " "),
        "permissions": f"{st.st_mode & 0o777:04o}",
        "user": "terra",
        "group": "terra",
        "link_group": None,
        "link_last_modified": None,
        "link_size": None,
        "link_target": None,
        "link_user": None,
    }
