"""A copy of files.state that starts empty is seeded from a peer's snapshot over HTTP (the metrics
server's ``/copy/NAME``), and nothing but an intact copy of the same kind, layout and topic is
ever installed: any other answer leaves the copy empty, to be rebuilt from the topic.

No broker: the copies are filled directly, and seeding runs before any read of the topic.
"""

from __future__ import annotations

import dataclasses
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from consumers.state.keeper_store import Encoded, KeeperCopy, KeeperStore
from consumers.state.sqlite_file import StatusIndexError
from consumers.state.view import StateFollower
from schemas.codec import Codec
from terra_xfer import metrics, seeding
from terra_xfer.broker import free_port
from terra_xfer.config import Config
from terra_xfer.metrics_http import Health, MetricsServer, serve
from tests.samples import VERSION, sample
from tests.unit.test_status_index_load import index_names

CODEC = Codec()
PARTITIONS = 3


def _record(i: int, state: str = "TRANSFERRED") -> tuple[int, int, str, Encoded]:
    key = f"ua-mac/f{i}"
    value = sample("FileState") | {"key": key, "path": key, "state": state}
    return i % PARTITIONS, i // PARTITIONS, key, Encoded.of(value, CODEC.encode("FileState", value))


def _rows(path: Path, table: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return sorted(db.execute(f"SELECT * FROM {table}").fetchall())
    finally:
        db.close()


def _config(*seed_from: str) -> Config:
    config = Config()
    return dataclasses.replace(
        config, status=dataclasses.replace(config.status, seed_from=seed_from)
    )


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    running = serve(0, Health())
    try:
        yield running
    finally:
        running.close()


def _url(server: MetricsServer) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[KeeperCopy]:
    """A state keeper's copy holding 30 files over three partitions, offered to peers."""
    copy = KeeperCopy(Config(), tmp_path / "peer" / "keeper.sqlite")
    copy.store.apply(_record(i) for i in range(30))
    copy._offer()  # as its first catch-up does
    try:
        yield copy
    finally:
        copy.close()


def _seeds(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "terra_xfer_copy_seeds_total", {"store": "state-keeper", "outcome": outcome}
    )
    return value or 0.0


def test_an_empty_copy_is_seeded_from_a_peer_with_its_rows_offsets_and_indexes(
    tmp_path: Path, peer: KeeperCopy, server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seeding, "TELL_EVERY_S", 0.0)  # every wait and chunk is told
    told: list[str | None] = []
    fresh = KeeperCopy(
        _config(_url(server)), tmp_path / "new" / "keeper.sqlite", progress=told.append
    )
    seeded_before = _seeds("seeded")
    try:
        assert fresh.seed()
        assert not fresh.seed()  # asked once: by the first catch-up
        assert fresh.store.offsets() == peer.store.offsets() == {0: 10, 1: 10, 2: 10}
        assert _rows(fresh.store.path, "kept") == _rows(peer.store.path, "kept")
        assert fresh.store.get("ua-mac/f7") == peer.store.get("ua-mac/f7")
    finally:
        fresh.close()
    # Readiness heard how far it was, and no longer waits once the copy is in.
    assert any(why is not None and why.startswith("seeding its copy") for why in told)
    assert told[-1] is None
    assert index_names(fresh.store.path) == {"kept_state", "kept_settled"}
    assert _seeds("seeded") == seeded_before + 1
    # Neither side leaves its snapshot behind.
    assert not list(tmp_path.rglob("*.seed")) and not list(tmp_path.rglob("*.snapshot"))


def test_a_copy_that_holds_anything_asks_no_peer(
    tmp_path: Path, peer: KeeperCopy, server: MetricsServer
) -> None:
    own = KeeperCopy(_config(_url(server)), tmp_path / "own" / "keeper.sqlite")
    try:
        own.store.apply([_record(100)])
        own.seed()
        assert own.store.offsets() == {100 % PARTITIONS: 100 // PARTITIONS + 1}
        assert own.store.get("ua-mac/f7") is None
    finally:
        own.close()


def test_the_first_peer_that_gives_a_good_copy_is_used(
    tmp_path: Path, peer: KeeperCopy, server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A port nothing listens on, a frozen peer (its port takes the connection, nothing answers),
    # a peer that holds no such copy (404), then one that does.
    monkeypatch.setattr(seeding, "SILENCE_S", 0.5)
    without = _liar(b"no copy named 'state-keeper' here\n", 0, status=404)
    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen()
    try:
        seed_from = (
            f"http://127.0.0.1:{free_port()}",  # nothing listens there
            f"http://127.0.0.1:{frozen.getsockname()[1]}",
            f"http://127.0.0.1:{without.server_address[1]}",
            _url(server),
        )
        fresh = KeeperCopy(_config(*seed_from), tmp_path / "new" / "keeper.sqlite")
        try:
            fresh.seed()
            assert fresh.store.offsets() == peer.store.offsets()
        finally:
            fresh.close()
    finally:
        frozen.close()
        without.shutdown()
        without.server_close()


@pytest.mark.parametrize(
    ("name", "topic", "status"),
    [
        ("batcher-view", "terra.files.state", 404),
        ("state-keeper", "other.files.state", 409),
    ],
)
def test_a_peer_refuses_a_copy_it_does_not_hold(
    peer: KeeperCopy, server: MetricsServer, tmp_path: Path, name: str, topic: str, status: int
) -> None:
    url = f"{_url(server)}/copy/{name}?topic={topic}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    refused.value.close()
    assert refused.value.code == status


def test_an_empty_peer_gives_nothing_and_the_copy_stays_empty(
    tmp_path: Path, server: MetricsServer
) -> None:
    empty = KeeperCopy(Config(), tmp_path / "peer" / "keeper.sqlite")
    empty._offer()
    fresh = KeeperCopy(_config(_url(server)), tmp_path / "new" / "keeper.sqlite")
    none_before = _seeds("none")
    try:
        fresh.seed()
        assert not fresh.store.holds_anything()
    finally:
        fresh.close()
        empty.close()
    assert _seeds("none") == none_before + 1


class _Liar(BaseHTTPRequestHandler):
    """Answers every copy request with ``body`` under the right headers (``length``: the
    Content-Length it claims)."""

    body = b""
    length = 0
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header(seeding.COPY_HEADER, "state-keeper")
        self.send_header("Content-Length", str(self.length))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def _liar(body: bytes, length: int, status: int = 200) -> ThreadingHTTPServer:
    handler = type(
        "Liar", (_Liar,), {"body": body, "length": length or len(body), "status": status}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _snapshot_bytes(peer: KeeperCopy, tmp_path: Path) -> bytes:
    target = tmp_path / "snap.sqlite"
    seeding.snapshot(peer.store.path, target)
    return target.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "short", "other layout"])
def test_a_bad_snapshot_is_never_installed(tmp_path: Path, peer: KeeperCopy, damage: str) -> None:
    good = _snapshot_bytes(peer, tmp_path)
    if damage == "garbage":
        body, length = b"not a database at all" * 100, 2100
    elif damage == "truncated":  # the peer says it is whole, and it is cut at half
        body = good[: len(good) // 2]
        length = len(body)
    elif damage == "short":  # the connection ends before the length it announced
        body, length = good[: len(good) // 2], len(good)
    else:
        db = sqlite3.connect(tmp_path / "snap.sqlite")
        db.execute("PRAGMA user_version = 99")
        db.close()
        body = (tmp_path / "snap.sqlite").read_bytes()
        length = len(body)
    httpd = _liar(body, length)
    fresh = KeeperCopy(
        _config(f"http://127.0.0.1:{httpd.server_address[1]}"),
        tmp_path / "new" / "keeper.sqlite",
    )
    try:
        fresh.seed()
        assert not fresh.store.holds_anything()
        assert fresh.store.offsets() == {}
    finally:
        fresh.close()
        httpd.shutdown()
        httpd.server_close()
    assert not list((tmp_path / "new").glob("*.seed"))


def test_install_refuses_a_copy_that_holds_rows(tmp_path: Path, peer: KeeperCopy) -> None:
    seeding.snapshot(peer.store.path, tmp_path / "snap.sqlite")
    with KeeperStore(tmp_path / "own.sqlite") as own:
        own.apply([_record(1)])
        with pytest.raises(StatusIndexError, match="holds rows already"):
            own.install(tmp_path / "snap.sqlite")


def test_a_view_is_seeded_with_its_counts(tmp_path: Path, server: MetricsServer) -> None:
    peer = StateFollower(Config(), tmp_path / "peer" / "sweeper-view.sqlite", records=False)
    peer._offer()
    fresh = StateFollower(
        _config(_url(server)), tmp_path / "new" / "sweeper-view.sqlite", records=False
    )
    try:
        records = [_record(i, "DONE" if i % 2 else "TRANSFERRED") for i in range(20)]
        peer.index.apply(
            (p, o, k, CODEC.decode_head(e.raw, "history")[1]) for p, o, k, e in records
        )
        fresh.seed()
        assert fresh.index.offsets() == peer.index.offsets()
        assert (
            fresh.index.counts_by_state()
            == peer.index.counts_by_state()
            == {
                "DONE": 10,
                "TRANSFERRED": 10,
            }
        )
        # In flight at the peer, so not offered again: the empty copy would have said it is new.
        assert not fresh.needs_requeue("ua-mac/f2", VERSION)
    finally:
        fresh.close()
        peer.close()


def test_snapshots_taken_while_the_copy_is_written_are_each_consistent(
    tmp_path: Path, peer: KeeperCopy
) -> None:
    # Each write adds one new file per partition and moves each offset by one: in any consistent
    # state the copy holds exactly as many rows as its offsets add up to.
    stop = threading.Event()

    def write() -> None:
        with KeeperStore(peer.store.path) as writer:
            i = 30
            while not stop.is_set():
                writer.apply(_record(n) for n in range(i, i + PARTITIONS))
                i += PARTITIONS

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        sizes = set()
        for n in range(20):
            target = tmp_path / f"snap{n}.sqlite"
            seeding.snapshot(peer.store.path, target)
            rows = _rows(target, "kept")
            offsets = dict(_rows(target, "kept_offsets"))
            assert len(rows) == sum(offsets.values())
            sizes.add(len(rows))
        assert writer.is_alive()
    finally:
        stop.set()
        writer.join(timeout=30)
    assert len(sizes) > 1  # the snapshots were taken while rows came in


def test_dns_entries_name_every_address_of_the_host() -> None:
    found = seeding.peers(["dns+http://localhost:9100", "http://peer:9100/", "http://peer:9100"])
    assert "http://127.0.0.1:9100" in found
    assert found.count("http://peer:9100") == 1
    assert seeding.peers(["dns+http://no-such-host.invalid:9100"]) == []


def test_snapshots_left_by_a_killed_process_are_removed(tmp_path: Path) -> None:
    copy = KeeperCopy(Config(), tmp_path / "keeper.sqlite")
    try:
        copy.store.apply([_record(1)])
        left = [seeding.snapshot_of(copy.store.path), seeding.seed_of(copy.store.path)]
        for path in left:
            path.write_bytes(b"a half-written snapshot")
        copy.seed()  # as the first catch-up does, then offers the copy
        copy._offer()
        assert [p.exists() for p in left] == [False, False]
    finally:
        copy.close()
