"""A local Clowder (v1 API) for tests: a real HTTP server on 127.0.0.1, state in SQLite.

It serves the endpoints pyclowder and the catalog backend use (``ROUTES``; each exists in Clowder's
route table, which a test checks), checks the API key the way Clowder takes it (``X-API-Key``
header or ``?key=``), records every request, and injects faults on the next requests of a route::

    with ClowderDouble(api_key="k", source_paths=("/data/",)) as clowder:
        clowder.faults.fail("POST /api/datasets/createempty", status=502, times=2)
        clowder.faults.reset("POST /api/uploadToDataset/:id", after=True)  # done, answer lost
        clowder.faults.stall("GET /api/datasets")  # held until release(), then dropped
        clowder.faults.stall("POST /api/datasets/createempty", serve=True)  # ...then served late
        clowder.faults.rendezvous("POST /api/datasets/createempty", parties=2)  # force a race
        clowder.faults.mix(seed=7, error=0.05, reset=0.02, lost=0.01)  # any request, at random
        ...
        clowder.requests()  # Counter of requests by route
        clowder.store.named("dataset", "stereoTop - 2017-08-24__12-40-01-916")
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.clowder_endpoints import Endpoints, Reply, Request
from tests.doubles.clowder_faults import Fault, Faults
from tests.doubles.clowder_store import ClowderStore

HOLD_LIMIT_S = 30.0  # the longest a stalled or rendezvous request waits before giving up


@dataclass(frozen=True)
class Route:
    """One endpoint: method and path in Clowder's route-table syntax, and its handler."""

    method: str
    path: str
    handler: str

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        pattern = re.sub(r":(\w+)", r"(?P<\1>[^/]+)", re.escape(self.path).replace(r"\:", ":"))
        found = re.fullmatch(pattern, path)
        return None if found is None else found.groupdict()


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/me", "me"),
    Route("POST", "/api/spaces", "create_space"),
    Route("GET", "/api/spaces/:id", "get_space"),
    Route("POST", "/api/spaces/:spaceId/addCollectionToSpace/:collectionId", "add_collection_to_space"),
    Route("POST", "/api/spaces/:spaceId/addDatasetToSpace/:datasetId", "add_dataset_to_space"),
    Route("GET", "/api/collections", "list_collections"),
    Route("POST", "/api/collections", "create_collection"),
    Route("POST", "/api/collections/newCollectionWithParent", "create_collection_with_parent"),
    Route("GET", "/api/collections/:coll_id", "get_collection"),
    Route("DELETE", "/api/collections/:coll_id", "delete_collection"),
    Route("GET", "/api/collections/:coll_id/datasets", "collection_datasets"),
    Route("POST", "/api/collections/:coll_id/datasets/:ds_id", "attach_dataset"),
    Route("POST", "/api/collections/:coll_id/addSubCollection/:sub_coll_id", "attach_sub_collection"),
    Route("GET", "/api/collections/:coll_id/getChildCollections", "child_collections"),
    Route("GET", "/api/collections/:coll_id/getParentCollections", "parent_collections"),
    Route("GET", "/api/datasets", "list_datasets"),
    Route("POST", "/api/datasets/createempty", "create_dataset"),
    Route("GET", "/api/datasets/:id", "get_dataset"),
    Route("DELETE", "/api/datasets/:id", "delete_dataset"),
    Route("GET", "/api/datasets/:id/files", "dataset_files"),
    Route("GET", "/api/datasets/:id/metadata.jsonld", "get_dataset_metadata"),
    Route("POST", "/api/datasets/:id/metadata.jsonld", "add_dataset_metadata"),
    Route("POST", "/api/uploadToDataset/:id", "upload_to_dataset"),
    Route("DELETE", "/api/files/:id", "delete_file"),
    Route("GET", "/api/files/:id/metadata.jsonld", "get_file_metadata"),
    Route("POST", "/api/files/:id/metadata.jsonld", "add_file_metadata"),
)  # fmt: skip
ROUTE_NAMES = frozenset(r.name for r in ROUTES)


@dataclass(frozen=True)
class Seen:
    """One request as received: route name, path, query, and how the key came."""

    route: str
    path: str
    query: dict[str, str]
    key_via: str | None  # "header", "query" or None


class _Dropped(Exception):
    """The connection was reset on purpose; nothing more is sent."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = HOLD_LIMIT_S  # a client that never sends does not hold a thread forever

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def handle(self) -> None:
        with contextlib.suppress(_Dropped):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are recorded in :attr:`ClowderDouble.seen` instead."""

    def _serve(self, method: str) -> None:
        double = self.server.double
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        found = [(r, p) for r in ROUTES if (p := r.match(method, parts.path)) is not None]
        if not found:
            return self._send(Reply(404, f"Action not found: {method} {parts.path}", text=True))
        route, params = found[0]
        key_via = self._key_via(query, double.api_key)
        double.record(Seen(route.name, parts.path, query, key_via))
        fault = double.faults.take(route.name) or double.faults.draw()
        if fault is not None and (fault.kind in ("stall", "rendezvous") or not fault.after):
            self._before(fault)
            if fault.kind in ("status", "reset"):
                return self._fail(fault)
        if key_via is None:
            return self._send(Reply(401, "Not authorized", text=True))
        request = Request(params, query, body, self.headers.get("Content-Type", ""))
        with double.store.lock:  # each request is atomic, as one MongoDB operation would be
            reply = getattr(double.endpoints, route.handler)(request)
        double.changed()
        if fault is not None and fault.after and fault.kind in ("status", "reset"):
            return self._fail(fault)
        self._send(reply)

    def _key_via(self, query: dict[str, str], key: str) -> str | None:
        if self.headers.get("X-API-Key") == key:
            return "header"
        return "query" if query.get("key") == key else None

    def _before(self, fault: Fault) -> None:
        if fault.kind == "stall":
            self.server.double.faults.released.wait(HOLD_LIMIT_S)
            if not fault.after:
                self._reset()
        if fault.kind == "rendezvous" and fault.barrier is not None:
            try:
                fault.barrier.wait(HOLD_LIMIT_S)
            except threading.BrokenBarrierError:
                self._send(Reply(503, "rendezvous never completed", text=True))
                raise _Dropped from None

    def _fail(self, fault: Fault) -> None:
        if fault.kind == "reset":
            self._reset()
        self._send(Reply(fault.status, fault.body, text=True))

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
        raise _Dropped

    def _send(self, reply: Reply) -> None:
        text = reply.body if reply.text else json.dumps(reply.body)
        data = str(text).encode("utf-8")
        self.send_response(reply.status)
        kind = "text/plain" if reply.text else "application/json"
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread: a clean stop
    double: ClowderDouble


class ClowderDouble:
    """The double's lifecycle: ``with ClowderDouble() as clowder: ... clowder.url``."""

    def __init__(self, api_key: str = "test-key", source_paths: tuple[str, ...] = ()) -> None:
        self.api_key = api_key
        self.store = ClowderStore()
        self.faults = Faults(ROUTE_NAMES)
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._changes = threading.Condition()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.double = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.endpoints = Endpoints(self.store, self.url, source_paths)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> ClowderDouble:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self.faults.abort()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self.store.close()

    def changed(self) -> None:
        """Called when a request arrives and when it is carried out: wakes :meth:`wait_until`."""
        with self._changes:
            self._changes.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait for ``predicate`` (checked after every request) to hold; False on timeout."""
        with self._changes:
            return self._changes.wait_for(predicate, timeout)

    def record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)
        self.changed()

    def seen(self, route: str | None = None) -> list[Seen]:
        """Requests received so far (of one route, if named), in arrival order."""
        with self._lock:
            return [s for s in self._seen if route is None or s.route == route]

    def requests(self) -> Counter[str]:
        """Requests received so far, by route."""
        with self._lock:
            return Counter(s.route for s in self._seen)
