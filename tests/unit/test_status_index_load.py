"""A copy filled from the start of files.state (a view, the status index, the state keeper's) is
bulk loaded: its secondary indexes are built once at the end, never left missing after the load,
whatever ends it. No broker (see state_feed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from consumers.state.keeper_store import KeeperCopy, KeeperStore
from consumers.state.status_index import StatusIndex
from consumers.state.view import TopicFollower
from terra_xfer.config import Config
from tests.state_feed import Feed
from tests.unit.test_state_view_modes import follower, put, state


def index_names(path: Path) -> set[str]:
    """The secondary indexes in the SQLite file at ``path`` (SQLite's own for keys left out)."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
    finally:
        db.close()
    return {name for (name,) in rows}


def indexes_while_applying(store: StatusIndex | KeeperStore) -> list[set[str]]:
    """Record the indexes the store's file has at each write a catch-up makes."""
    seen: list[set[str]] = []
    apply = store.apply

    def watched(records):  # type: ignore[no-untyped-def]
        seen.append(index_names(store.path))
        return apply(records)

    store.apply = watched  # type: ignore[method-assign]
    return seen


def loaded_from_the_start(
    copy: TopicFollower, feed: Feed, store: StatusIndex | KeeperStore
) -> set[str]:
    """Three states caught up into the new ``copy``: no secondary index while they are written,
    the same ones as before afterwards; those indexes."""
    made = index_names(store.path)
    seen = indexes_while_applying(store)
    for offset in range(3):
        put(feed, offset, state(f"f{offset}", "ARRIVED"))
    assert copy.catch_up() == 3
    assert seen == [set()]
    assert index_names(store.path) == made
    return made


@pytest.mark.parametrize("kind", [{}, {"records": False}])
def test_a_new_copy_is_loaded_without_its_indexes_and_has_them_all_after(
    tmp_path: Path, kind: dict[str, bool]
) -> None:
    view, feed = follower(tmp_path, **kind)
    made = loaded_from_the_start(view, feed, view.index)
    assert {"files_state", "files_settled"} <= made
    assert view.index.counts_by_state() == {"ARRIVED": 3}
    view.close()


def test_a_copy_that_holds_rows_keeps_its_indexes_while_it_catches_up(tmp_path: Path) -> None:
    view, feed = follower(tmp_path)
    put(feed, 0, state("a", "ARRIVED"))
    view.catch_up()
    made = index_names(view.index.path)
    seen = indexes_while_applying(view.index)
    put(feed, 1, state("a", "BATCHED"))
    view.catch_up()
    assert seen == [made]
    view.close()


def test_a_load_that_fails_leaves_the_indexes_made(tmp_path: Path) -> None:
    view, feed = follower(tmp_path)
    made = index_names(view.index.path)

    def broken(records):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("disk I/O error")

    view.index.apply = broken  # type: ignore[method-assign]
    put(feed, 0, state("a", "ARRIVED"))
    with pytest.raises(sqlite3.OperationalError):
        view.catch_up()
    assert index_names(view.index.path) == made
    view.close()


def test_a_file_left_without_indexes_by_a_killed_load_gets_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "status.sqlite"
    with StatusIndex(path):
        made = index_names(path)
    db = sqlite3.connect(path)  # what a load killed before its end leaves behind
    for name in made:
        db.execute(f"DROP INDEX {name}")
    db.commit()
    db.close()
    with StatusIndex(path):
        assert index_names(path) == made


def test_the_keepers_new_copy_is_loaded_the_same_way(tmp_path: Path) -> None:
    copy = KeeperCopy(Config(), tmp_path / "keeper.sqlite")
    feed = Feed()
    copy._new_consumer = lambda: feed  # type: ignore[method-assign]
    copy._partitions = [0]
    made = loaded_from_the_start(copy, feed, copy.store)
    assert made == {"kept_state", "kept_settled"}
    copy.close()

    db = sqlite3.connect(tmp_path / "keeper.sqlite")  # a load killed before its end
    for name in made:
        db.execute(f"DROP INDEX {name}")
    db.commit()
    db.close()
    with KeeperStore(tmp_path / "keeper.sqlite") as store:
        assert index_names(store.path) == made
        assert store.counts_by_state() == {"ARRIVED": 3}
