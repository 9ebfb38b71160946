"""Seeding a new local copy of files.state from a peer's, instead of reading the whole topic.

Every copy of one kind (the state keeper's, the batcher's view, the sweeper's view) follows every
partition of files.state and stores, with its rows, the next offset it has applied per partition:
any replica's copy is a consistent prefix of the topic, and so a valid start for another
replica's (the state keeper's copy is never ahead of what files.state committed). A replica that
starts with nothing (a new StatefulSet ordinal after a scale event, or a lost claim) asks its
peers for a snapshot of their copy, installs the first that checks out, and catches up from the
snapshot's offsets: the bytes of a copy move in seconds where rebuilding it reads the whole topic.

Serving: :func:`offer` names a copy this process may hand out; the metrics server answers
``GET /copy/NAME?topic=TOPIC`` with :func:`snapshot` (SQLite's online backup: consistent while
the stage writes) of it, one at a time. Fetching: :func:`fetch` tries each peer of
``[status] seed_from`` in turn (``dns+http://HOST:PORT`` is every address the name resolves to,
such as a headless Service's ready pods). A peer that answers anything else, or a snapshot that
fails its checks, is passed over; with none, the copy is rebuilt from files.state as before.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

log = logging.getLogger(__name__)
COPY_ROUTE = "/copy/"
COPY_HEADER = "X-Terra-Xfer-Copy"  # the name of the copy a snapshot is of
DNS_SCHEME = "dns+"
CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 5.0  # also the longest silence of a peer in the middle of a snapshot
READ_TIMEOUT_S = 120.0  # a peer may take this long to make its snapshot before it answers
TELL_EVERY_S = 5.0


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Offered(NamedTuple):
    """A copy this process may hand out: its file, and the topic it follows."""

    path: Path
    topic: str
    holds_anything: Callable[[], bool]


_offered: dict[str, Offered] = {}
_offered_lock = threading.Lock()
_snapshotting = threading.Lock()  # one snapshot at a time: each is the size of the copy


def offer(name: str, copy: Offered) -> None:
    with _offered_lock:
        _offered[name] = copy


def withdraw(name: str, path: Path) -> None:
    with _offered_lock:
        if name in _offered and _offered[name].path == path:
            del _offered[name]


class Refusal(Exception):
    """Why a copy is not handed out: an HTTP status and one line."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@contextlib.contextmanager
def serving(name: str, topic: str) -> Iterator[Path]:
    """A snapshot of the offered copy ``name`` of ``topic``, removed when the block ends; raises
    :class:`Refusal` when there is none to give (another name, topic, an empty copy, busy)."""
    with _offered_lock:
        copy = _offered.get(name)
    if copy is None:
        raise Refusal(404, f"no copy named {name!r} here")
    if copy.topic != topic:
        raise Refusal(409, f"the copy {name!r} here follows {copy.topic}, not {topic}")
    if not copy.holds_anything():
        raise Refusal(404, f"the copy {name!r} here holds nothing yet")
    if not _snapshotting.acquire(blocking=False):
        raise Refusal(503, "a snapshot is being made already; ask again later")
    target = copy.path.with_name(copy.path.name + ".snapshot")
    try:
        snapshot(copy.path, target)
        yield target
    finally:
        target.unlink(missing_ok=True)
        _snapshotting.release()


def snapshot(source: Path, target: Path) -> None:
    """Copy the database ``source`` into ``target`` as one consistent read: SQLite's backup in a
    single step holds one read transaction, and in WAL mode the copy's writer goes on meanwhile."""
    target.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def peers(seed_from: Iterable[str]) -> list[str]:
    """The base URLs of ``seed_from``: each entry as it is, or for ``dns+http://HOST:PORT`` one
    per address HOST resolves to now (none when it resolves to nothing)."""
    found: list[str] = []
    for entry in seed_from:
        if not entry.startswith(DNS_SCHEME):
            found.append(entry.rstrip("/"))
            continue
        url = urllib.parse.urlsplit(entry[len(DNS_SCHEME) :])
        if not url.hostname:
            continue
        try:
            infos = socket.getaddrinfo(url.hostname, url.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.info("seed peers: %s does not resolve now: %s", url.hostname, exc)
            continue
        for address in dict.fromkeys(str(info[4][0]) for info in infos):
            host = f"[{address}]" if ":" in address else address
            port = f":{url.port}" if url.port else ""
            found.append(f"{url.scheme}://{host}{port}")
    return list(dict.fromkeys(found))


def fetch(
    name: str,
    topic: str,
    seed_from: Iterable[str],
    target: Path,
    tell: Callable[[str], None],
    check: Callable[[Path], None],
) -> str | None:
    """Fetch a snapshot of copy ``name`` of ``topic`` into ``target`` from the first peer that
    gives one that passes ``check`` (which raises ValueError or sqlite3.Error when it does not);
    returns that peer, or None (``target`` removed) when none did. ``tell`` hears how far it is."""
    for peer in peers(seed_from):
        query = urllib.parse.urlencode({"topic": topic})
        url = f"{peer}{COPY_ROUTE}{urllib.parse.quote(name)}?{query}"
        target.unlink(missing_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as answer:
                if answer.headers.get(COPY_HEADER) != name:
                    raise ValueError(f"the answer is not a copy named {name!r}")
                size = int(answer.headers.get("Content-Length") or -1)
                with target.open("wb") as out:
                    got = _stream(answer, out, tell, f"seeding its copy ({name}) from {peer}", size)
                if got != size:
                    raise ValueError(f"{got:,} bytes came of {size:,}")
            check(target)
        except urllib.error.HTTPError as exc:
            with exc:
                why = exc.read(200).decode("utf-8", "replace").strip()
            log.info("%s: %s gave no copy: HTTP %d %s", name, peer, exc.code, why)
        except (OSError, ValueError, sqlite3.Error) as exc:
            log.warning("%s: the copy from %s is not used: %s", name, peer, exc)
        else:
            return peer
    target.unlink(missing_ok=True)
    return None


def _stream(
    source: BinaryIO, out: Writable, tell: Callable[[str], None], what: str, size: int
) -> int:
    """Copy ``source`` to ``out``; every TELL_EVERY_S, tell how far (``what``: N MB of M)."""
    got = 0
    told = time.monotonic()
    while chunk := source.read(CHUNK):
        out.write(chunk)
        got += len(chunk)
        if time.monotonic() - told >= TELL_EVERY_S:
            told = time.monotonic()
            tell(f"{what}: {got / 1e6:,.0f} MB of {size / 1e6:,.0f}")
    return got


def send(name: str, topic: str, write_head: Callable[[int, int], None], out: Writable) -> None:
    """Answer a request for copy ``name`` of ``topic``: ``write_head(status, length)`` sends the
    status line and headers, then the snapshot follows on ``out``. Raises :class:`Refusal`
    before anything is sent when there is none to give."""
    with serving(name, topic) as snap, snap.open("rb") as data:
        size = snap.stat().st_size
        write_head(200, size)
        shutil.copyfileobj(data, out, CHUNK)
        log.info("%s: a snapshot of %s bytes handed out", name, f"{size:,}")
