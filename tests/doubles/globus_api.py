"""A local HTTP double of the Globus Transfer API v0.10 and the Auth token endpoint.

It speaks the subset globus-sdk calls for terra-xfer, on 127.0.0.1 at a random port, and really
copies files between endpoint directories in a worker thread (see :mod:`tests.doubles.globus_tasks`).
Point the SDK at it with ``base_url=double.url`` or the environment from :meth:`GlobusDouble.env`.
Faults are injected with Python methods: 429 with Retry-After or 5xx for the next requests, slow
responses, a lost submit response (the client repeats the submission id), a task that ends FAILED,
failing paths (partial success), a task that goes INACTIVE until resumed, and a movable clock for
deadlines. Usage::

    with GlobusDouble() as double:
        src = double.add_endpoint(tmp_path / "src")
        ...
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.globus_routes import TRANSFER_SCOPE, ApiError, Routes, error_doc
from tests.doubles.globus_tasks import Endpoint, Engine, TaskPlan

__all__ = ["TRANSFER_SCOPE", "GlobusDouble", "Recorded"]

_ERROR_CODES = {429: "RequestLimitExceeded", 503: "ServiceUnavailable"}


@dataclass(frozen=True)
class Recorded:
    """One request the double answered."""

    method: str
    path: str
    status: int


@dataclass
class _Fault:
    count: int
    path: str | None
    status: int = 0
    retry_after: int | None = None
    delay_s: float = 0.0

    def applies(self, path: str) -> bool:
        return self.count > 0 and (self.path is None or path.startswith(self.path))


class GlobusDouble:
    """The double; a context manager that starts and stops its HTTP server and task engine."""

    def __init__(
        self,
        client_id: str = "terra-test-client",
        client_secret: str = "terra-test-secret",
        *,
        page_size: int = 100,
    ) -> None:
        self.client_id = client_id
        self.requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self._clock_offset = 0.0
        self._engine = Engine(self.now)
        self._routes = Routes(self._engine, self.now, client_id, client_secret, page_size)
        self._faults: list[_Fault] = []
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> GlobusDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="globus-double"
        )
        self._thread.start()
        self._engine.start()

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._server.server_close()
            self._engine.stop()
        self._server = self._thread = None

    @property
    def url(self) -> str:
        """Base URL for both services (``/v0.10/...`` and ``/v2/oauth2/token``)."""
        assert self._server is not None, "start the double first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def env(self) -> dict[str, str]:
        """Environment that points globus-sdk's transfer and auth clients here."""
        return {
            "GLOBUS_SDK_SERVICE_URL_TRANSFER": self.url,
            "GLOBUS_SDK_SERVICE_URL_AUTH": self.url,
        }

    def add_endpoint(self, root: Path, endpoint_id: str | None = None, name: str = "") -> str:
        """Register a directory as an endpoint (its ``/``); returns the endpoint id."""
        endpoint_id = endpoint_id or str(uuid.uuid4())
        root.mkdir(parents=True, exist_ok=True)
        self._routes.endpoints[endpoint_id] = Endpoint(
            endpoint_id, root, name or f"double#{root.name}"
        )
        return endpoint_id

    # fault injection -------------------------------------------------------------------------

    def fail_requests(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: int | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (under ``path``, if given) with ``status``."""
        with self._engine.lock:
            self._faults.append(_Fault(count, path, status=status, retry_after=retry_after))

    def slow_requests(self, delay_s: float, count: int = 1, *, path: str | None = None) -> None:
        """Delay the next ``count`` responses by ``delay_s`` (cut short when the double stops)."""
        with self._engine.lock:
            self._faults.append(_Fault(count, path, delay_s=delay_s))

    def lose_next_submit_response(self, status: int = 502) -> None:
        """The next submit creates its task but answers ``status``, as if the reply were lost."""
        with self._engine.lock:
            self._routes.lose_submit.append(status)

    def fail_next_task(
        self,
        code: str = "ENDPOINT_ERROR",
        description: str = "",
        *,
        after_files: int = 0,
        report_fatal_error: bool = True,
    ) -> None:
        """The next submitted task ends FAILED with this fatal error after ``after_files``; with
        ``report_fatal_error=False`` only its event list tells why."""
        plan = TaskPlan(
            fail_after=after_files, fail_code=code, report_fatal_error=report_fatal_error
        )
        if description:
            plan.fail_description = description
        with self._engine.lock:
            self._routes.plans.append(plan)

    def pause_next_task(self, *, after_files: int = 0, code: str = "AUTH") -> None:
        """The next submitted task goes INACTIVE after ``after_files`` until :meth:`resume_task`."""
        with self._engine.lock:
            self._routes.plans.append(TaskPlan(pause_after=after_files, pause_code=code))

    def fail_paths(self, *source_paths: str, code: str = "PERMISSION_DENIED") -> None:
        """These source paths fail with ``code`` (skipped errors under skip_source_errors)."""
        with self._engine.lock:
            self._engine.failing_paths.update(dict.fromkeys(source_paths, code))

    def heal_paths(self, *source_paths: str) -> None:
        """These source paths no longer fail (the operator fixed the permissions)."""
        with self._engine.lock:
            for path in source_paths:
                self._engine.failing_paths.pop(path, None)

    def resume_task(self, task_id: str) -> None:
        self._engine.resume(task_id)

    @contextmanager
    def held(self) -> Iterator[None]:
        """No task moves forward inside this block."""
        self._engine.hold(True)
        try:
            yield
        finally:
            self._engine.hold(False)

    def advance_clock(self, seconds: float) -> None:
        """Move the double's clock (deadlines, timestamps) forward."""
        with self._engine.lock:
            self._clock_offset += seconds
        self._engine.poke()

    # observation -----------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._clock_offset

    def task(self, task_id: str) -> dict[str, Any]:
        with self._engine.lock:
            return self._engine.tasks[task_id].doc()

    def submits(self) -> list[tuple[str, str]]:
        """Every valid submit so far, in order: (submission id, "Accepted" or "Duplicate")."""
        with self._engine.lock:
            return list(self._routes.submits)

    def task_ids(self) -> list[str]:
        with self._engine.lock:
            return list(self._engine.tasks)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds after a change in the engine, or fail after the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._engine.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the double did not reach the expected state in time")
                self._engine.lock.wait(left)

    def wait_status(self, task_id: str, *statuses: str, timeout_s: float = 10.0) -> None:
        self.wait_for(lambda: self._engine.tasks[task_id].status in statuses, timeout_s)

    # request handling ------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one request: injected faults first, then the route; returns status, doc, headers."""
        path, query = _split(target)
        fault = self._take_fault(path)
        if fault is not None and fault.delay_s:
            self._closing.wait(fault.delay_s)
        if fault is not None and fault.status:
            code = _ERROR_CODES.get(fault.status, "InternalError")
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return fault.status, error_doc(code, f"injected {fault.status}", path), extra
        try:
            status, doc = self._routes.dispatch(method, path, query, headers, body)
        except ApiError as exc:
            status, doc = exc.status, error_doc(exc.code, exc.message, path)
        except Exception as exc:  # a bug in the double: answer 500 and keep it for the test
            self.errors.append(exc)
            status, doc = 500, error_doc("InternalError", f"double failed: {exc!r}", path)
        return status, doc, {}

    def record(self, method: str, target: str, status: int) -> None:
        with self._engine.lock:
            self.requests.append(Recorded(method, _split(target)[0], status))
            self._engine.lock.notify_all()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._engine.lock:
            for fault in self._faults:
                if fault.applies(path):
                    fault.count -= 1
                    return fault
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up mid-answer (a timed-out request) is not a failure of the double."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_class(double: GlobusDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, doc, extra = double.handle(method, self.path, headers, body)
            double.record(method, self.path, status)
            payload = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read :attr:`GlobusDouble.requests` instead."""

    return Handler


def _split(target: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(target)
    return parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
