"""Following files.state: the last state of a key in a batch wins; the lighter views answer alike.

No broker: the follower's consumer is replaced by one that hands out prepared messages.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.state.status_index import StatusIndexError
from consumers.state.view import StateFollower
from schemas.codec import Codec
from terra_xfer.config import Config
from tests.samples import sample
from tests.state_feed import Feed, Msg

CODEC = Codec()


def state(name: str, state: str, version: str = "1:1", **over: Any) -> dict[str, Any]:
    path = f"LemnaTec/MovingSensor/stereoTop/2017-08-24/{name}"
    value = sample("FileState") | {"key": f"ua-mac/{path}", "path": path, "version": version}
    value |= {"state": state, "ingested": state == "INGESTED", "deleted": False} | over
    return value


def follower(tmp_path: Path, **kind: bool) -> tuple[StateFollower, Feed]:
    view = StateFollower(Config(), tmp_path / "view.sqlite", **kind)
    feed = Feed()
    view._consumer = feed
    view._new_consumer = lambda: feed  # type: ignore[method-assign]
    view._partitions = [0]
    return view, feed


def put(feed: Feed, offset: int, value: dict[str, Any], partition: int = 0) -> None:
    feed.queued.append(Msg(partition, offset, value["key"], CODEC.encode("FileState", value)))


@pytest.fixture
def views(tmp_path: Path) -> Iterator[dict[str, tuple[StateFollower, Feed]]]:
    made = {
        "full": follower(tmp_path / "full"),
        "columns": follower(tmp_path / "columns", records=False),
        "transferred": follower(tmp_path / "transferred", transferred_only=True),
    }
    yield made
    for view, _feed in made.values():
        view.close()


def test_a_batch_writes_each_key_once_as_its_last_state(tmp_path: Path) -> None:
    view, feed = follower(tmp_path)
    a = [state("a", s) for s in ("ARRIVED", "BATCHED", "TRANSFERRED")]
    b = state("b", "ARRIVED")
    for offset, value in enumerate([a[0], a[1], b, a[2]]):
        put(feed, offset, value)

    assert view.refresh() == 2
    assert view.get(a[2]["key"]) == a[2]
    assert view.get(b["key"]) == b
    assert view.index.offsets() == {0: 4}
    view.close()


def test_every_kind_of_view_answers_transferred_alike(
    views: dict[str, tuple[StateFollower, Feed]],
) -> None:
    sent, moving = state("sent", "INGESTED"), state("moving", "BATCHED")
    replaced = state("replaced", "TRANSFERRED")
    newer = state("replaced", "ARRIVED", version="2:2")
    for view, feed in views.values():
        for offset, value in enumerate([sent, moving, replaced]):
            put(feed, offset, value)
        view.refresh()
        put(feed, 3, newer)  # a newer version arrives in a later batch
        view.refresh()

    asks = [
        (sent["key"], "1:1", True),
        (sent["key"], "9:9", False),
        (moving["key"], "1:1", False),
        (replaced["key"], "1:1", False),
        (replaced["key"], "2:2", False),
        ("ua-mac/unknown", "1:1", False),
    ]
    for name, (view, _feed) in views.items():
        for key, version, expected in asks:
            assert view.transferred(key, version) is expected, (name, key, version)
        among = view.transferred_among((key, version) for key, version, _ in asks)
        assert among == {(sent["key"], "1:1")}, name


def test_the_transferred_only_view_keeps_rows_of_transferred_files_only(
    views: dict[str, tuple[StateFollower, Feed]],
) -> None:
    view, feed = views["transferred"]
    put(feed, 0, state("a", "TRANSFERRED"))
    put(feed, 1, state("b", "ARRIVED"))
    view.refresh()

    assert view.index.counts_by_state() == {"TRANSFERRED": 1}
    with pytest.raises(StatusIndexError):
        view.needs_requeue(state("b", "ARRIVED")["key"], "1:1")


def test_catching_up_keeps_the_transferred_only_view_to_transferred_rows(
    views: dict[str, tuple[StateFollower, Feed]],
) -> None:
    view, feed = views["transferred"]
    put(feed, 0, state("a", "TRANSFERRED"))
    put(feed, 1, state("b", "ARRIVED"))
    view.catch_up()

    assert view.index.counts_by_state() == {"TRANSFERRED": 1}
    assert view.index.offsets() == {0: 2}


def test_a_view_without_records_answers_the_sweeper_but_has_no_records(
    views: dict[str, tuple[StateFollower, Feed]],
) -> None:
    full, columns = views["full"], views["columns"]
    values = [state("a", "ARRIVED"), state("b", "BATCHED"), state("c", "DONE")]
    for view, feed in (full, columns):
        for offset, value in enumerate(values):
            put(feed, offset, value)
        view.refresh()

    for value in values:
        for version in ("1:1", "0:0", "5:5"):
            expected = full[0].needs_requeue(value["key"], version)
            assert columns[0].needs_requeue(value["key"], version) is expected
    assert columns[0].index.counts_by_state() == full[0].index.counts_by_state()
    with pytest.raises(StatusIndexError):
        columns[0].get(values[0]["key"])


def test_a_full_view_keeps_each_record_as_read_and_never_decodes_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, feed = follower(tmp_path)
    value = state("a", "INGESTED")
    put(feed, 0, value)
    (sent,) = [m.value() for m in feed.queued]

    def whole(_data: bytes) -> Any:
        raise AssertionError("a record was decoded whole on the way in")

    with monkeypatch.context() as patched:
        patched.setattr(view.codec, "decode", whole)
        assert view.refresh() == 1
    (stored,) = view.index._db.execute("SELECT record FROM files").fetchone()
    assert zlib.decompress(stored) == sent  # the files.state record's own bytes
    assert view.get(value["key"]) == value
    view.close()
