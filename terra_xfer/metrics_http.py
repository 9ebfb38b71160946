"""The HTTP side of the metrics: /metrics, /healthz and /readyz, served from a daemon thread.

``/copy/NAME?topic=T`` hands a peer a snapshot of a local copy of files.state to seed its own
from (:mod:`terra_xfer.seeding`); 404 when this process holds none by that name.

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 once every stage of the
process has finished a step and none has gone ``stale_after_s`` without one, else 503 with the
reason. Started by the CLI (``run_stage``, ``terra-xfer up``), never at import time.

``/metrics`` serves this process's ``REGISTRY``, or, for ``up`` with a process per stage, the
registry that gathers what the stage processes wrote (``terra_xfer.metrics.gathered``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from terra_xfer import seeding
from terra_xfer.metrics import REGISTRY

log = logging.getLogger(__name__)
READY_STALE_S = 300.0  # a stage whose last step ended longer ago than this is not ready


class Health:
    """Liveness and readiness of the stages in this process.

    Ready once every expected stage has finished a step, as long as each one's last step ended
    within ``stale_after_s`` (a stage stuck in one call, or stopped, turns the process unready).
    """

    def __init__(
        self, stale_after_s: float = READY_STALE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._last: dict[str, float | None] = {}
        self._waiting: dict[str, str] = {}
        self._lock = threading.Lock()

    def expect(self, name: str) -> None:
        with self._lock:
            self._last.setdefault(name, None)

    def beat(self, name: str) -> None:
        with self._lock:
            self._last[name] = self.clock()

    def waiting(self, name: str, why: str | None) -> None:
        """Say why ``name`` is waiting (retrying a service, say); None: it no longer is. Shown
        by /readyz, which stays ready: a stage that waits on purpose is not broken."""
        with self._lock:
            if why is None:
                self._waiting.pop(name, None)
            else:
                self._waiting[name] = why

    def waiting_now(self) -> dict[str, str]:
        """What each stage is waiting for now, by stage (only those that wait)."""
        with self._lock:
            return dict(self._waiting)

    def ready(self) -> tuple[bool, str]:
        """(ready, one line saying why not, or what the ready stages are waiting for)."""
        now = self.clock()
        with self._lock:
            last = dict(self._last)
            waiting = dict(self._waiting)
        why = "".join(f"; {n} {w}" for n, w in sorted(waiting.items()))
        if not last:
            return False, "no stage has started" + why
        unstarted = sorted(n for n, t in last.items() if t is None)
        if unstarted:
            return False, "not started: " + ", ".join(unstarted) + why
        stale = sorted(n for n, t in last.items() if t is not None and now - t > self.stale_after_s)
        if stale:
            return False, f"no step for {self.stale_after_s:.0f} s: " + ", ".join(stale) + why
        return True, "ready" + why


def _handler(health: Health, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ok, why = health.ready()
                self._send(200 if ok else 503, why.encode() + b"\n")
            elif path.startswith(seeding.COPY_ROUTE):
                self._send_copy(path)
            else:
                self._send(404, b"not found\n")

        def _send_copy(self, path: str) -> None:
            """A snapshot of a local copy of files.state, for a peer to seed its own from."""
            name = urllib.parse.unquote(path[len(seeding.COPY_ROUTE) :])
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            topic = query.get("topic", [""])[0]

            def head(code: int, length: int) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/vnd.sqlite3")
                self.send_header("Content-Length", str(length))
                self.send_header(seeding.COPY_HEADER, name)
                self.end_headers()

            try:
                seeding.send(name, topic, head, self.connection)
            except seeding.Refusal as exc:
                self._send(exc.status, str(exc).encode() + b"\n")
            except OSError as exc:  # the peer went away mid-copy, or the disk is full
                log.warning("copy %s: the snapshot was not handed out: %s", name, exc)

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics http: " + format, *args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Through the log, not printed to stderr (the process's log stays one format): a client
        that hung up mid-answer (a probe's timeout, a peer given up) is routine."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("metrics http: %s went away: %s", client_address, exc)
        else:
            log.exception("metrics http: answering %s failed", client_address)


class MetricsServer:
    """The running HTTP server; ``close`` stops it and releases the port."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self.httpd = httpd
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def serve(
    port: int, health: Health, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> MetricsServer:
    """Serve /metrics (``registry``), /healthz and /readyz on ``port`` (0: any free port) in a
    daemon thread."""
    httpd = _Server((host, port), _handler(health, registry))
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d/metrics", host, httpd.server_address[1])
    return MetricsServer(httpd, thread)


@contextlib.contextmanager
def serving(
    port: int, registry: CollectorRegistry = REGISTRY, host: str = "127.0.0.1"
) -> Iterator[Health]:
    """A ``Health`` for the block, served with ``registry`` on ``host:port`` unless the port is
    0 (metrics off).

    A port that cannot be bound is logged as an error and the block runs unserved."""
    health = Health()
    server = None
    if port:
        try:
            server = serve(port, health, host, registry=registry)
        except OSError as exc:  # a busy port must not keep the pipeline from running
            log.error("metrics not served: port %d: %s", port, exc)
    try:
        yield health
    finally:
        if server is not None:
            server.close()
