"""Seeding a new local copy of files.state from a peer's, instead of reading the whole topic.

Every copy of one kind (the state keeper's, the batcher's view, the sweeper's view) follows every
partition of files.state and stores, with its rows, the next offset it has applied per partition:
any replica's copy is a consistent prefix of the topic, and so a valid start for another
replica's (the state keeper's copy is never ahead of what files.state committed). A replica that
starts with nothing (a new StatefulSet ordinal after a scale event, or a lost claim) asks its
peers for a snapshot of their copy, installs the first that checks out, and catches up from the
snapshot's offsets: the bytes of a copy move in seconds where rebuilding it reads the whole topic.

Serving: :func:`offer` names a copy this process may hand out (a copy offers itself once it has
caught up). The metrics server answers ``GET /copy/NAME?topic=TOPIC``: the first request starts a
:func:`snapshot` (SQLite's online backup: consistent while the stage writes) in a thread and
answers 202, and a later one gets the snapshot (200), which is then removed. Fetching:
:func:`fetch` tries each peer of ``[status] seed_from`` in turn (``dns+http://HOST:PORT`` is every
address the name resolves to, such as a headless Service's ready pods), asking again while it
answers 202. A peer silent for ``SILENCE_S`` (frozen, gone), one that answers anything else, or a
snapshot that fails its checks, is passed over; with none, the copy is rebuilt from files.state.
"""

from __future__ import annotations

import http.client
import logging
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

log = logging.getLogger(__name__)
COPY_ROUTE = "/copy/"
COPY_HEADER = "X-Terra-Xfer-Copy"  # the name of the copy a snapshot is of
DNS_SCHEME = "dns+"
CHUNK = 1 << 20
# The longest silence of a peer at any moment of a request: one frozen or gone is passed over.
SILENCE_S = 10.0
MAKING_S = 1800.0  # how long a peer that says it is making its snapshot is waited for
ASK_AGAIN_S = 1.0
SNAPSHOT_FRESH_S = 600.0  # a snapshot not claimed in this long is made again when asked
TELL_EVERY_S = 5.0


class Offered(NamedTuple):
    """A copy this process may hand out: its file, the topic it follows, and the SQL that says
    whether it holds anything (read on a connection of the server's own)."""

    path: Path
    topic: str
    holds_sql: str


class Refusal(Exception):
    """Why a copy is not handed out: an HTTP status and one line."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class Made(NamedTuple):
    """A snapshot ready to hand out."""

    path: Path
    size: int
    made_at: float


class _Offers:
    """The copies this process offers, and the snapshot of each being made or ready.

    A snapshot is made in a thread of its own on the first request (the peer is told to ask
    again: 202), so no request waits in silence while a large copy is copied; it is handed out
    once, then removed, and one left unclaimed for ``SNAPSHOT_FRESH_S`` is made again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offered: dict[str, Offered] = {}
        self._making: dict[str, float] = {}  # name -> when its snapshot was started
        self._made: dict[str, Made] = {}
        self._failed: dict[str, str] = {}

    def offer(self, name: str, copy: Offered) -> None:
        """Offer ``copy`` as ``name``; a snapshot file an earlier process left beside it (killed
        while it made or sent one) is removed: none of this process's is there yet."""
        with self._lock:
            if name not in self._offered:
                snapshot_of(copy.path).unlink(missing_ok=True)
            self._offered[name] = copy

    def withdraw(self, name: str, path: Path) -> None:
        made = None
        with self._lock:
            if name in self._offered and self._offered[name].path == path:
                del self._offered[name]
                made = self._made.pop(name, None)
        if made is not None:
            made.path.unlink(missing_ok=True)

    def take(self, name: str, topic: str) -> Made:
        """The snapshot of copy ``name`` of ``topic``, now the caller's to send and remove;
        raises :class:`Refusal`: 202 while it is being made (started by this call if need be),
        or why there is none to give."""
        with self._lock:
            copy = self._offered.get(name)
            if copy is None:
                raise Refusal(404, f"no copy named {name!r} here")
            if copy.topic != topic:
                raise Refusal(409, f"the copy {name!r} here follows {copy.topic}, not {topic}")
            made = self._made.pop(name, None)
            if made is not None and time.monotonic() - made.made_at < SNAPSHOT_FRESH_S:
                return made
            if name in self._making:
                since = time.monotonic() - self._making[name]
                raise Refusal(202, f"making a snapshot of {name!r}: {since:.0f} s so far")
            failed = self._failed.pop(name, None)
            if not _holds_anything(copy):
                raise Refusal(404, f"the copy {name!r} here holds nothing yet")
            self._making[name] = time.monotonic()
        if made is not None:
            made.path.unlink(missing_ok=True)
        threading.Thread(
            target=self._make, args=(name, copy), name=f"snapshot-{name}", daemon=True
        ).start()
        why = f"making a snapshot of {name!r}" + (
            f" (the last one failed: {failed})" if failed else ""
        )
        raise Refusal(202, why)

    def _make(self, name: str, copy: Offered) -> None:
        target = snapshot_of(copy.path)
        try:
            snapshot(copy.path, target)
        except (OSError, sqlite3.Error) as exc:
            log.warning("%s: no snapshot made: %s", name, exc)
            target.unlink(missing_ok=True)
            with self._lock:
                self._making.pop(name, None)
                self._failed[name] = str(exc)
            return
        with self._lock:
            self._making.pop(name, None)
            still = self._offered.get(name) == copy
            if still:
                self._made[name] = Made(target, target.stat().st_size, time.monotonic())
        if not still:  # withdrawn meanwhile (its stage closed): nobody will hand it out
            target.unlink(missing_ok=True)


def snapshot_of(path: Path) -> Path:
    """Where the snapshot of the copy at ``path`` is made, beside it."""
    return path.with_name(path.name + ".snapshot")


def seed_of(path: Path) -> Path:
    """Where a peer's snapshot for the copy at ``path`` is fetched to, beside it (the same file
    system, so that it can take the copy's place)."""
    return path.with_name(path.name + ".seed")


def _holds_anything(copy: Offered) -> bool:
    try:
        db = sqlite3.connect(f"file:{copy.path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return bool(db.execute(copy.holds_sql).fetchone()[0])
    except sqlite3.Error:
        return False
    finally:
        db.close()


OFFERS = _Offers()
offer = OFFERS.offer
withdraw = OFFERS.withdraw


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
    returns that peer, or None (``target`` removed) when none did. ``tell`` hears how far it is,
    at least every TELL_EVERY_S."""
    for peer in peers(seed_from):
        query = urllib.parse.urlencode({"topic": topic})
        url = f"{peer}{COPY_ROUTE}{urllib.parse.quote(name)}?{query}"
        target.unlink(missing_ok=True)
        try:
            _fetch_one(url, name, peer, target, tell)
            check(target)
        except urllib.error.HTTPError as exc:
            with exc:
                why = exc.read(200).decode("utf-8", "replace").strip()
            log.info("%s: %s gave no copy: HTTP %d %s", name, peer, exc.code, why)
        except (OSError, ValueError, http.client.HTTPException, sqlite3.Error) as exc:
            log.warning("%s: the copy from %s is not used: %s", name, peer, exc)
        else:
            return peer
    target.unlink(missing_ok=True)
    return None


def _fetch_one(url: str, name: str, peer: str, target: Path, tell: Callable[[str], None]) -> None:
    """Ask ``url`` until its snapshot is made (202 meanwhile), then stream it into ``target``."""
    started = told = time.monotonic()
    delay = ASK_AGAIN_S / 16
    while True:
        answer = urllib.request.urlopen(url, timeout=SILENCE_S)
        with answer:
            if answer.status == 202:
                why = answer.read(200).decode("utf-8", "replace").strip()
                now = time.monotonic()
                if now - started > MAKING_S:
                    raise ValueError(f"still not made after {MAKING_S:.0f} s: {why}")
                if now - told >= TELL_EVERY_S:
                    told = now
                    tell(f"seeding its copy ({name}): {peer} is {why}")
                time.sleep(delay)  # the peer makes its snapshot meanwhile
                delay = min(delay * 2, ASK_AGAIN_S)
                continue
            if answer.headers.get(COPY_HEADER) != name:
                raise ValueError(f"the answer is not a copy named {name!r}")
            size = int(answer.headers.get("Content-Length") or -1)
            with target.open("wb") as out:
                got = _stream(answer, out, tell, f"seeding its copy ({name}) from {peer}", size)
            if got != size:
                raise ValueError(f"{got:,} bytes came of {size:,}")
            return


def _stream(
    source: BinaryIO, out: BinaryIO, tell: Callable[[str], None], what: str, size: int
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


def send(name: str, topic: str, write_head: Callable[[int, int], None], out: socket.socket) -> None:
    """Answer a request for copy ``name`` of ``topic``: ``write_head(status, length)`` sends the
    status line and headers, then the snapshot follows on the connection ``out`` (by
    ``sendfile``: the kernel copies it), and is removed. Raises :class:`Refusal` before anything
    is sent when there is none to give yet (see :meth:`_Offers.take`)."""
    made = OFFERS.take(name, topic)
    try:
        with made.path.open("rb") as data:
            write_head(200, made.size)
            out.sendfile(data)
        log.info("%s: a snapshot of %s bytes handed out", name, f"{made.size:,}")
    finally:
        made.path.unlink(missing_ok=True)
