"""The state keeper's working copy: states and offsets kept together, older layouts rebuilt."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumers.state.keeper_store import Encoded, KeeperCopy, KeeperStore
from consumers.state.status_index import StatusIndex, StatusIndexCorruptError
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from tests.samples import sample
from tests.state_feed import Feed, Msg

HISTORY = {"state": "ARRIVED", "at_ms": 1, "evidence": {"version": "1:2", "source": "xferlog"}}


def state(key: str, name: str = "ARRIVED", **over: Any) -> dict[str, Any]:
    return sample("FileState") | {"key": key, "path": key.partition("/")[2], "state": name} | over


def written(key: str, offset: int, name: str = "ARRIVED", partition: int = 0) -> Any:
    value = state(key, name)
    return partition, offset, key, Encoded.of(value, Codec().encode("FileState", value))


def test_a_state_reads_back_as_it_was_written(tmp_path: Path) -> None:
    with KeeperStore(tmp_path / "k.sqlite") as store:
        assert store.apply([written("ua-mac/a", 0), written("ua-mac/b", 1, "DONE")]) == 2

        assert store.get("ua-mac/b") == state("ua-mac/b", "DONE")
        assert store.get_many(["ua-mac/a", "ua-mac/none"]) == {"ua-mac/a": state("ua-mac/a")}
        assert store.counts_by_state() == {"ARRIVED": 1, "DONE": 1}


def test_the_last_record_of_a_key_wins_and_offsets_move_past_all(tmp_path: Path) -> None:
    with KeeperStore(tmp_path / "k.sqlite") as store:
        store.apply([written("ua-mac/a", 5), written("ua-mac/a", 9, "BATCHED", 0)])
        store.apply([written("ua-mac/c", 3, partition=2)])

        assert store.get("ua-mac/a")["state"] == "BATCHED"  # type: ignore[index]
        assert store.offsets() == {0: 10, 2: 4}


def test_records_below_a_stored_offset_are_skipped(tmp_path: Path) -> None:
    with KeeperStore(tmp_path / "k.sqlite") as store:
        store.apply([written("ua-mac/a", 7, "DONE")])

        assert store.apply([written("ua-mac/a", 6, "ARRIVED")]) == 0
        assert store.get("ua-mac/a")["state"] == "DONE"  # type: ignore[index]
        assert store.offsets() == {0: 8}


def test_rows_and_offsets_survive_reopening(tmp_path: Path) -> None:
    with KeeperStore(tmp_path / "k.sqlite") as store:
        store.apply([written("ua-mac/a", 0, "INGESTED")])
    with KeeperStore(tmp_path / "k.sqlite") as store:
        assert store.offsets() == {0: 1}
        assert store.get("ua-mac/a")["state"] == "INGESTED"  # type: ignore[index]


def test_a_copy_in_the_status_index_layout_is_emptied_and_rebuilt(tmp_path: Path) -> None:
    """An earlier release kept the copy as a StatusIndex: its offsets must not survive without
    its rows, or the keeper would fold new events onto files it no longer knows."""
    path = tmp_path / "k.sqlite"
    with StatusIndex(path) as old:
        old.apply([(0, 41, "ua-mac/a", state("ua-mac/a"))])
        assert old.offsets() == {0: 42}

    with KeeperStore(path) as store:
        assert store.offsets() == {}
        assert store.get("ua-mac/a") is None
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "files" not in tables and "meta" not in tables


def test_an_unreadable_record_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite"
    with KeeperStore(path) as store:
        store.apply([written("ua-mac/a", 0)])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE kept SET value = X'C30100' WHERE key = 'ua-mac/a'")
    with (
        KeeperStore(path) as store,
        pytest.raises(StatusIndexCorruptError, match=r"ua-mac/a.*delete the file"),
    ):
        store.get("ua-mac/a")


def test_a_failed_offset_listing_is_asked_again_by_a_fresh_client(tmp_path: Path) -> None:
    """After a broker restart a client may keep stale leader epochs for ever: a listing that failed
    is transient, and the next one is made by a new admin client."""

    class Stale:
        def list_offsets(self, *_args: object, **_kwargs: object) -> None:
            raise KafkaException(KafkaError(KafkaError.FENCED_LEADER_EPOCH))

    copy = KeeperCopy(Config(), tmp_path / "keeper.sqlite")
    try:
        copy._admin = Stale()  # type: ignore[assignment]
        with pytest.raises(TransientError, match=r"listing the offsets of terra\.files\.state"):
            copy.open_transactions({0})
        assert copy._admin is None
        assert copy.open_transactions(set()) == {}  # nothing held: nothing asked
    finally:
        copy.close()


def test_the_copy_holds_each_record_as_files_state_holds_it(tmp_path: Path) -> None:
    """Nothing is encoded for the copy: a catch-up stores the bytes it read (only their head is
    decoded, for the columns), and a state reads back from them whole, history included."""
    codec = Codec()
    done = state("ua-mac/a", "DONE") | {"history": [HISTORY] * 3}
    raw = codec.encode("FileState", done)
    feed = Feed()
    feed.queued = [Msg(0, 0, "ua-mac/a", raw)]
    copy = KeeperCopy(Config(), tmp_path / "keeper.sqlite")
    copy._consumer = feed
    copy._new_consumer = lambda: feed  # type: ignore[method-assign]
    copy._partitions = [0]
    try:
        copy.catch_up()

        with sqlite3.connect(tmp_path / "keeper.sqlite") as db:
            rows = db.execute("SELECT key, state, updated_ms, value FROM kept").fetchall()
        assert rows == [("ua-mac/a", "DONE", done["updated_ms"], raw)]
        assert copy.store.get("ua-mac/a") == done
        assert copy.store.offsets() == {0: 1}
    finally:
        copy.close()
