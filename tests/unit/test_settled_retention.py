"""Settled files leave the stages' local copies of files.state after the retention window.

The batcher's and sweeper's views and the state keeper's copy hold what is in flight and what
settled lately; the status index keeps every file. No broker: the followers read prepared messages.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest

from consumers.state import keeper_store, status_index
from consumers.state.keeper_store import Encoded, KeeperCopy, KeeperStore
from consumers.state.retention import DAY_MS, Retention
from consumers.state.status_index import StatusIndex
from consumers.state.view import StateFollower, TopicFollower
from schemas.codec import Codec
from terra_xfer import config as config_module
from terra_xfer.config import Config, load
from terra_xfer.errors import ConfigError
from tests.samples import sample
from tests.sqlite_steps import sqlite_steps
from tests.state_feed import Feed, Msg

CODEC = Codec()
NOW_MS = 1_800_000_000_000
KEEP_MS = 30 * DAY_MS
OLD = NOW_MS - KEEP_MS - 1  # settled just before the window
RECENT = NOW_MS - KEEP_MS + 60_000


def state(name: str, state: str, updated_ms: int, **over: Any) -> dict[str, Any]:
    path = f"LemnaTec/MovingSensor/stereoTop/2017-08-24/{name}"
    done = state == "DONE"
    value = sample("FileState") | {"key": f"ua-mac/{path}", "path": path, "state": state}
    return value | {"updated_ms": updated_ms, "ingested": done, "deleted": done} | over


# A file in each situation: only the first two leave a copy.
FILES = [
    state("done-long-ago", "DONE", OLD),
    state("missing-long-ago", "MISSING", OLD, version="0:0"),
    state("done-lately", "DONE", RECENT),
    state("quarantined-long-ago", "QUARANTINED", OLD),
    state("ingested-long-ago", "INGESTED", OLD),  # the deleter off or in dry run: still here
    state("transferred-long-ago", "TRANSFERRED", OLD),
]
LET_GO = {FILES[0]["key"], FILES[1]["key"]}
KEPT = {f["key"] for f in FILES} - LET_GO


def retention(every_s: float = 600.0) -> tuple[Retention, list[float]]:
    now = [0.0]
    made = Retention(KEEP_MS, every_s=every_s, wall_ms=lambda: NOW_MS, clock=lambda: now[0])
    return made, now


def encoded(value: dict[str, Any]) -> Encoded:
    return Encoded.of(value, Codec().encode("FileState", value))


def fed(follower: TopicFollower) -> Feed:
    feed = Feed()
    follower._consumer = feed
    follower._new_consumer = lambda: feed  # type: ignore[method-assign]
    follower._partitions = [0]
    for offset, value in enumerate(FILES):
        feed.queued.append(Msg(0, offset, value["key"], CODEC.encode("FileState", value)))
    return feed


def rows(db_path: Path, table: str) -> set[str]:
    with sqlite3.connect(db_path) as db:
        return {k for (k,) in db.execute(f"SELECT key FROM {table}")}


@pytest.mark.parametrize("kind", [{}, {"records": False}])
def test_a_view_rebuilt_from_files_state_skips_files_settled_before_the_window(
    tmp_path: Path, kind: dict[str, bool]
) -> None:
    kept, _now = retention()
    view = StateFollower(Config(), tmp_path / "v.sqlite", retention=kept, **kind)
    fed(view)

    view.catch_up()

    assert rows(tmp_path / "v.sqlite", "files") == KEPT
    assert view.index.offsets() == {0: len(FILES)}  # read past them all the same
    view.close()


def test_the_batchers_view_keeps_a_file_settled_lately_but_not_one_settled_long_ago(
    tmp_path: Path,
) -> None:
    kept, _now = retention()
    view = StateFollower(Config(), tmp_path / "v.sqlite", transferred_only=True, retention=kept)
    fed(view)
    view.refresh()

    assert view.transferred(FILES[2]["key"], FILES[2]["version"])
    assert not view.transferred(FILES[0]["key"], FILES[0]["version"])
    view.close()


def test_a_view_kept_running_lets_files_go_as_they_age_past_the_window(tmp_path: Path) -> None:
    wall = [NOW_MS - KEEP_MS]  # every file is inside the window when it is read
    clock = [0.0]
    kept = Retention(KEEP_MS, every_s=600, wall_ms=lambda: wall[0], clock=lambda: clock[0])
    view = StateFollower(Config(), tmp_path / "v.sqlite", records=False, retention=kept)
    fed(view)
    view.refresh()
    assert rows(tmp_path / "v.sqlite", "files") == {f["key"] for f in FILES}

    wall[0] = NOW_MS  # a month later: the first two settled before the window now
    assert view.prune() == 0  # not due: pruned at the first refresh, next in 600 s
    clock[0] = 600.0
    assert view.prune() == 2

    assert rows(tmp_path / "v.sqlite", "files") == KEPT
    view.close()


def test_the_keepers_copy_lets_settled_files_go_too(tmp_path: Path) -> None:
    kept, _now = retention()
    copy = KeeperCopy(Config(), tmp_path / "k.sqlite", kept)
    fed(copy)

    copy.catch_up()

    assert rows(tmp_path / "k.sqlite", "kept") == KEPT
    fresh = state("done-long-ago", "DONE", NOW_MS)  # written again: kept again
    copy.store.apply([(0, len(FILES), fresh["key"], encoded(fresh))])
    assert copy.store.get(fresh["key"]) == fresh
    assert copy.store.prune(NOW_MS - KEEP_MS) == 0
    copy.close()


def test_without_a_window_nothing_is_let_go(tmp_path: Path) -> None:
    view = StateFollower(Config(), tmp_path / "v.sqlite", retention=Retention(None))
    fed(view)
    view.catch_up()

    assert rows(tmp_path / "v.sqlite", "files") == {f["key"] for f in FILES}
    assert view.prune() == 0
    view.close()


@pytest.mark.parametrize("table", ["status", "keeper"])
def test_pruning_removes_only_settled_rows_older_than_the_cutoff_through_its_index(
    tmp_path: Path, table: str
) -> None:
    path = tmp_path / "s.sqlite"
    store: StatusIndex | KeeperStore = StatusIndex(path) if table == "status" else KeeperStore(path)
    if isinstance(store, KeeperStore):
        store.apply([(0, i, f["key"], encoded(f)) for i, f in enumerate(FILES)])
    else:
        store.apply([(0, i, f["key"], f) for i, f in enumerate(FILES)])

    assert store.prune(NOW_MS - KEEP_MS) == 2

    name = "files" if table == "status" else "kept"
    assert rows(path, name) == KEPT
    prune = (status_index._PRUNE if table == "status" else keeper_store._PRUNE).replace("?", "5")
    with sqlite3.connect(path) as db:
        plan = " ".join(str(r[-1]) for r in db.execute(f"EXPLAIN QUERY PLAN {prune}"))
    assert plan == f"SEARCH {name} USING INDEX {name}_settled (updated_ms<?)"
    store.close()


def test_a_keeper_copy_of_the_previous_layout_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE kept (key TEXT PRIMARY KEY, state TEXT, value TEXT)")
        db.execute("INSERT INTO kept VALUES ('ua-mac/a', 'DONE', '{}')")
        db.execute("PRAGMA user_version = 3")
    with KeeperStore(path) as store:
        assert store.counts_by_state() == {}
        assert store.offsets() == {}


def test_retention_is_due_first_then_every_interval() -> None:
    kept, now = retention(every_s=600)
    assert kept.cutoff_ms() == NOW_MS - KEEP_MS
    assert kept.due()
    now[0] = 599.0
    assert not kept.due()
    now[0] = 600.0
    assert kept.due()
    assert not Retention(None).due()
    assert Retention(None).cutoff_ms() is None


def test_the_window_comes_from_the_config_and_outlasts_the_event_topics(tmp_path: Path) -> None:
    assert Retention.of(Config()).keep_ms == 30 * DAY_MS
    never = tmp_path / "never.toml"
    never.write_text("[status]\nretain_settled_days = 0\n")
    assert Retention.of(load(never, env={})).keep_ms is None

    short = tmp_path / "short.toml"
    days = config_module.EVENT_RETENTION_DAYS
    short.write_text(f"[status]\nretain_settled_days = {days}\n")
    with pytest.raises(ConfigError, match=f"must be more than {days}"):
        load(short, env={})


def test_a_state_is_stored_as_its_compressed_record_and_rows_of_earlier_indexes_still_read(
    tmp_path: Path,
) -> None:
    value = FILES[2]
    index = StatusIndex(tmp_path / "s.sqlite")
    index.apply([(0, 0, value["key"], value)])
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        (stored,) = db.execute("SELECT record FROM files").fetchone()
        assert Codec().decode(zlib.decompress(stored)) == ("FileState", value)
    assert index.get(value["key"]) == value
    compact = json.dumps(value, separators=(",", ":"))
    for earlier in (zlib.compress(compact.encode(), 1), json.dumps(value)):  # as releases wrote
        with sqlite3.connect(tmp_path / "s.sqlite") as db:
            db.execute("UPDATE files SET record = ?", (earlier,))
        assert index.get(value["key"]) == value
    index.close()


def test_files_not_settled_that_have_not_moved_are_counted_by_state(tmp_path: Path) -> None:
    index = StatusIndex(tmp_path / "s.sqlite", keep_records=False)
    index.apply([(0, i, f["key"], f) for i, f in enumerate(FILES)])

    assert index.unsettled_before(NOW_MS) == {"INGESTED": 1, "QUARANTINED": 1, "TRANSFERRED": 1}
    assert index.unsettled_before(OLD) == {}
    index.close()


def test_counting_stuck_files_reads_only_the_files_not_settled(tmp_path: Path) -> None:
    """The sweeper counts stuck files at every walk and before it is ready: the work SQLite does
    must not grow with the files settled before (a season of DONE rows in the status index)."""
    index = StatusIndex(tmp_path / "s.sqlite", keep_records=False)
    unsettled = [f for f in FILES if f["state"] not in ("DONE", "MISSING")]
    index.apply([(0, i, f["key"], f) for i, f in enumerate(unsettled)])
    offset = len(unsettled)
    stuck = {"INGESTED": 1, "QUARANTINED": 1, "TRANSFERRED": 1}

    def steps_to_count() -> int:
        assert index.unsettled_before(NOW_MS) == stuck
        return sqlite_steps(index._db, lambda: index.unsettled_before(NOW_MS))

    before = steps_to_count()
    for n in range(3):  # three batches of 2,000 files settled
        batch = [state(f"settled-{n}-{i}", "DONE", OLD) for i in range(2000)]
        index.apply([(0, offset + i, f["key"], f) for i, f in enumerate(batch)])
        offset += len(batch)
        assert steps_to_count() == before
    index.close()
