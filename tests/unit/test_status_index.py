"""The status index: rows and offsets per batch, tombstones, streaming queries, reports, errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.state.fold import batched, fold
from consumers.state.status_index import (
    StateRecord,
    StatusIndex,
    StatusIndexBusyError,
    StatusIndexCorruptError,
)
from schemas.codec import Codec
from terra_xfer.cli.status import render_report
from terra_xfer.errors import PermanentError, TransientError
from tests.samples import sample
from tests.sqlite_steps import sqlite_steps

DAY_MS = 86_400_000
T0 = 1_503_578_401_916  # 2017-08-24T12:40:01.916Z
CODEC = Codec()


def file_state(
    name: str,
    state: str = "ARRIVED",
    *,
    sensor: str | None = "stereoTop",
    date: str | None = "2017-08-24",
    size: int = 100,
    updated_ms: int = T0,
    **over: Any,
) -> dict[str, Any]:
    """A valid FileState for ``sensor/date/name``; flags follow the state unless overridden."""
    path = f"LemnaTec/MovingSensor/{sensor}/{date}/{name}"
    value = sample("FileState") | {"key": f"ua-mac/{path}", "path": path, "state": state}
    value |= {"sensor": sensor, "date": date, "size": size, "version": f"{size}:1"}
    value |= {"ingested": state in ("INGESTED", "DONE"), "deleted": state in ("DELETED", "DONE")}
    value |= {"updated_ms": updated_ms, "arrived_ms": T0, "reason": None} | over
    CODEC.encode("FileState", value)
    return value


def put(partition: int, offset: int, value: dict[str, Any] | None, key: str = "") -> StateRecord:
    return partition, offset, key or str(value and value["key"]), value


@pytest.fixture
def index(tmp_path: Path) -> Iterator[StatusIndex]:
    with StatusIndex(tmp_path / "status" / "index.sqlite") as idx:
        yield idx


def test_empty_index(index: StatusIndex) -> None:
    assert index.offsets() == {}
    assert index.counts_by_state() == {}
    assert index.report() == []
    assert list(index.query()) == []
    assert index.get("ua-mac/nothing") is None


def test_apply_writes_rows_and_next_offsets(index: StatusIndex) -> None:
    a, b, c = file_state("a"), file_state("b", "TRANSFERRED"), file_state("c", "DONE")
    assert index.apply([put(0, 5, a), put(1, 9, b), put(0, 6, c)]) == 3
    assert index.offsets() == {0: 7, 1: 10}
    assert index.get(a["key"]) == a
    assert [f["path"] for f in index.query()] == [a["path"], b["path"], c["path"]]
    first = next(iter(index.query()))
    assert first == {
        "key": a["key"],
        "site": "ua-mac",
        "path": a["path"],
        "sensor": "stereoTop",
        "date": "2017-08-24",
        "state": "ARRIVED",
        "version": "100:1",
        "size": 100,
        "updated_ms": T0,
        "updated_at": "2017-08-24T12:40:01.916Z",
        "reason": None,
        "warning": None,
    }


def test_the_whole_record_and_its_history_come_back(index: StatusIndex) -> None:
    arrival = sample("FileArrived")
    state = fold(None, "FileArrived", arrival, T0 + 1)
    assert state is not None
    file = sample("BatchSubmitted")["files"][0] | {"version": arrival["version"]}
    state = batched(state, file, "b-1", "t-1", T0 + 2)
    assert state is not None
    index.apply([put(0, 0, state)])
    stored = index.get(state["key"])
    assert stored == state
    assert stored is not None and [t["state"] for t in stored["history"]] == ["ARRIVED", "BATCHED"]


def test_a_later_record_replaces_the_row_and_a_tombstone_removes_it(index: StatusIndex) -> None:
    arrived, done, other = file_state("a"), file_state("a", "DONE"), file_state("b")
    index.apply([put(0, 0, arrived), put(0, 1, other)])
    index.apply([put(0, 2, done)])
    assert index.counts_by_state() == {"ARRIVED": 1, "DONE": 1}
    assert index.get(done["key"]) == done
    assert index.apply([put(0, 3, None, key=other["key"])]) == 1
    assert index.get(other["key"]) is None
    assert [f["key"] for f in index.query()] == [done["key"]]
    assert index.offsets() == {0: 4}


def test_records_below_the_stored_offset_are_skipped(index: StatusIndex) -> None:
    old, new = file_state("a"), file_state("a", "TRANSFERRED")
    index.apply([put(0, 0, old), put(0, 1, new)])
    assert index.apply([put(0, 0, old), put(0, 1, new)]) == 0
    assert index.apply([put(0, 1, old), put(0, 2, new)]) == 1
    assert index.get(new["key"]) == new
    assert index.offsets() == {0: 3}


def test_a_writer_behind_another_on_the_same_file_never_undoes_its_rows(tmp_path: Path) -> None:
    """The indexer and a ``status`` command write one index: a batch read before the other's
    newer one, applied after it, leaves the newer rows and offsets as they are."""
    arrived, done = file_state("a"), file_state("a", "DONE")
    other = file_state("b")
    with (
        StatusIndex(tmp_path / "i.sqlite") as indexer,
        StatusIndex(tmp_path / "i.sqlite") as status,
    ):
        indexer.apply([put(0, 0, arrived), put(0, 1, done), put(1, 0, other)])
        assert status.apply([put(0, 0, arrived), put(1, 0, other)]) == 0  # read earlier
        assert status.get(done["key"]) == done and indexer.offsets() == {0: 2, 1: 1}
        assert status.apply([put(0, 1, done), put(0, 2, arrived)]) == 1  # only what is new
        assert indexer.get(arrived["key"]) == arrived and indexer.offsets() == {0: 3, 1: 1}


def test_a_failing_batch_writes_neither_rows_nor_offsets(index: StatusIndex) -> None:
    good = file_state("a")
    broken = {k: v for k, v in file_state("b").items() if k != "state"}
    with pytest.raises(KeyError):
        index.apply([put(0, 0, good), put(0, 1, broken)])
    assert index.offsets() == {}
    assert index.get(good["key"]) is None


def test_rows_and_offsets_survive_reopening(tmp_path: Path) -> None:
    value = file_state("a", "INGESTED")
    with StatusIndex(tmp_path / "i.sqlite") as first:
        first.apply([put(2, 41, value)])
    with StatusIndex(tmp_path / "i.sqlite") as again:
        assert again.offsets() == {2: 42}
        assert again.get(value["key"]) == value


def test_query_filters(index: StatusIndex) -> None:
    index.apply(
        [
            put(0, 0, file_state("a", "FAILED", reason="transfer: denied", updated_ms=T0)),
            put(0, 1, file_state("b", "FAILED", sensor="VNIR", updated_ms=T0 + 5)),
            put(0, 2, file_state("c", "DONE", sensor="VNIR", updated_ms=T0 + 1)),
        ]
    )
    # Ordered by key: VNIR sorts before stereoTop.
    assert [f["path"][-1] for f in index.query(state="FAILED")] == ["b", "a"]
    assert [f["path"][-1] for f in index.query(sensor="VNIR")] == ["b", "c"]
    assert [f["path"][-1] for f in index.query(state="FAILED", sensor="VNIR")] == ["b"]
    assert [f["path"][-1] for f in index.query(updated_before_ms=T0 + 2)] == ["c", "a"]
    assert [f["reason"] for f in index.query(state="FAILED")] == [None, "transfer: denied"]
    assert list(index.query(state="QUARANTINED")) == []


def test_report_per_sensor_and_day(index: StatusIndex) -> None:
    files = [
        file_state("a", "ARRIVED", size=1),
        file_state("b", "TRANSFERRED", size=10),
        file_state("c", "DONE", size=100),
        file_state("d", "DELETED", size=1000, reason="ingest: 403 forbidden"),
        file_state("e", "QUARANTINED", size=10_000),
        file_state("f", "INGESTED", sensor="VNIR", size=7),
        file_state("g", "ARRIVED", sensor="weather", date=None, size=3, arrived_ms=T0 + DAY_MS),
    ]
    index.apply([put(0, i, value) for i, value in enumerate(files)])
    assert index.report() == [
        line("VNIR", "2017-08-24", arrived=(1, 7), transferred=(1, 7), ingested=(1, 7)),
        line("stereoTop", "2017-08-24", arrived=(5, 11111), transferred=(3, 1110),
             ingested=(1, 100), deleted=(2, 1100), failed=(2, 11000)),
        line("weather", "2017-08-25", arrived=(1, 3)),
    ]  # fmt: skip


def test_missing_files_are_left_out_of_the_report_and_counted_as_waiting(
    index: StatusIndex,
) -> None:
    gone = "file 'LemnaTec/x' is missing from the cache"
    retry = "ingest: 503 Service Unavailable (attempt {}, retrying)"
    files = [
        file_state("a", "ARRIVED", size=1),
        file_state("b", "BATCHED", size=2),
        file_state("c", "FAILED", size=4, reason="transfer: denied"),
        file_state("d", "TRANSFERRED", size=8, reason=retry.format(2)),
        file_state("e", "DELETED", size=16, reason=retry.format(5)),
        file_state("f", "DELETED", size=32, reason="ingest: 400 bad request"),
        file_state("g", "TRANSFERRED", size=64, reason="delete refused: changed"),
        file_state("h", "INGESTED", size=128),
        file_state("i", "DONE", size=256),
        file_state("j", "QUARANTINED", size=512, reason="transfer: gone"),
        file_state("k", "MISSING", size=0, version="0:0", reason=gone),
        file_state("l", "MISSING", size=0, version="0:0", reason=gone, date=None, sensor=None),
    ]
    index.apply([put(0, i, value) for i, value in enumerate(files)])
    lines = index.report()
    assert [(ln["sensor"], ln["files_arrived"]) for ln in lines] == [("stereoTop", 10)]
    assert index.counts_by_state()["MISSING"] == 2
    assert index.waiting() == {
        "batch": {"files": 1, "bytes": 1},
        "transfer": {"files": 2, "bytes": 6},
        "ingest": {
            "files": 4,
            "bytes": 120,
            "reasons": [
                {"reason": "ingest: 503 Service Unavailable (retrying)", "files": 2},
                {"reason": "ingest: 400 bad request", "files": 1},
            ],
        },
        "deletion": {"files": 1, "bytes": 128},
        "missing": {"files": 2, "bytes": 0},
        "quarantined": {"files": 1, "bytes": 512},
    }
    assert index.waiting(top_reasons=1)["ingest"]["reasons"] == [
        {"reason": "ingest: 503 Service Unavailable (retrying)", "files": 2}
    ]
    text = render_report(lines, {}, index.waiting())
    assert "waiting for ingest               4     120 B" in text
    assert "        2  ingest: 503 Service Unavailable (retrying)" in text
    assert "missing from the cache           2       0 B" in text


def test_nothing_waits_in_an_empty_index(index: StatusIndex) -> None:
    waiting = index.waiting()
    assert list(waiting) == ["batch", "transfer", "ingest", "deletion", "missing", "quarantined"]
    assert all(group["files"] == group["bytes"] == 0 for group in waiting.values())
    assert waiting["ingest"]["reasons"] == []


def line(sensor: str, day: str, **counts: tuple[int, int]) -> dict[str, Any]:
    value: dict[str, Any] = {"sensor": sensor, "date": day}
    for stage in ("arrived", "transferred", "ingested", "deleted", "failed"):
        files, size = counts.get(stage, (0, 0))
        value |= {f"files_{stage}": files, f"bytes_{stage}": size}
    return value


def test_a_file_ingested_before_its_transfer_counts_as_transferred(index: StatusIndex) -> None:
    value = file_state("a", "INGESTED")
    index.apply([put(0, 0, value)])
    assert index.report()[0]["files_transferred"] == 1


def test_reset_forgets_rows_and_offsets(index: StatusIndex) -> None:
    index.apply([put(0, 0, file_state("a")), put(3, 7, file_state("b"))])
    index.reset()
    assert index.offsets() == {}
    assert index.counts_by_state() == {}
    assert index.apply([put(0, 0, file_state("a"))]) == 1


def test_hundred_thousand_rows_stream(index: StatusIndex) -> None:
    total = 100_000
    template = file_state("x")
    done = file_state("x", "DONE")

    def batch(start: int) -> Iterator[StateRecord]:
        for n in range(start, start + 10_000):
            value = done if n % 4 == 0 else template
            path = f"{value['path']}-{n:06d}"
            yield n % 3, n, f"ua-mac/{path}", value | {"key": f"ua-mac/{path}", "path": path}

    for start in range(0, total, 10_000):
        index.apply(batch(start))
    rows = index.query()
    assert isinstance(rows, Iterator)
    assert sum(1 for _ in rows) == total
    assert sum(1 for _ in index.query(state="DONE")) == total // 4
    assert index.counts_by_state() == {"ARRIVED": total * 3 // 4, "DONE": total // 4}
    assert index.offsets() == {0: 99_999 + 1, 1: 99_997 + 1, 2: 99_998 + 1}


def test_a_streaming_query_reads_one_snapshot_while_the_writer_goes_on(index: StatusIndex) -> None:
    index.apply([put(0, n, file_state(f"f{n:03d}")) for n in range(100)])
    rows = index.query()
    assert next(rows)["path"].endswith("f000")
    index.apply([put(0, 100 + n, file_state(f"g{n:03d}")) for n in range(50)])
    assert sum(1 for _ in rows) == 99
    assert sum(1 for _ in index.query()) == 150


def test_a_locked_index_is_a_transient_error(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    with StatusIndex(path, busy_timeout_s=0) as idx:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StatusIndexBusyError, match="locked") as caught:
                idx.apply([put(0, 0, file_state("a"))])
            assert isinstance(caught.value, TransientError)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert idx.apply([put(0, 0, file_state("a"))]) == 1


def test_a_file_that_is_not_a_database_is_a_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    path.write_bytes(b"this is not an sqlite database, it is plain text" * 100)
    with pytest.raises(StatusIndexCorruptError) as caught:
        StatusIndex(path)
    assert isinstance(caught.value, PermanentError)


WARNED = "metadata x_metadata.json could not be read (not JSON: ...); registered as a file"


def test_files_catalogued_with_a_warning_are_listed_and_counted(index: StatusIndex) -> None:
    plain = file_state("a", "DONE", size=10)
    warned = file_state("b", "DONE", size=32, warning=WARNED)
    index.apply([put(0, 1, plain), put(0, 2, warned)])
    assert index.warnings() == {"files": 1, "bytes": 32}
    assert [(f["path"], f["warning"]) for f in index.query()] == [
        (plain["path"], None),
        (warned["path"], WARNED),
    ]
    index.apply([put(0, 3, file_state("b", "ARRIVED", size=40))])  # a new version, no warning
    assert index.warnings() == {"files": 0, "bytes": 0}
    table = render_report(index.report(), {}, index.waiting(), {"files": 1, "bytes": 32})
    assert "ingested with a warning" in table and " 1 " in table.split("warning")[1]


def test_an_index_laid_out_before_warnings_keeps_its_rows_and_offsets(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with StatusIndex(path) as idx:
        idx.apply([put(0, 4, file_state("a", "DONE"))])
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE files DROP COLUMN warning")  # the first layout had no such column
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with StatusIndex(path) as idx:
        assert idx.offsets() == {0: 5}
        assert [f["warning"] for f in idx.query()] == [None]
        idx.apply([put(0, 5, file_state("b", "DONE", warning=WARNED))])
        assert idx.warnings()["files"] == 1


def test_the_oldest_change_per_state_is_read_for_the_states_asked(index: StatusIndex) -> None:
    rows = [
        file_state("a", "ARRIVED", updated_ms=T0 + 5),
        file_state("b", "ARRIVED", updated_ms=T0 + 2),
        file_state("c", "BATCHED", updated_ms=T0 + 9),
        file_state("d", "DONE", updated_ms=T0),
    ]
    index.apply([put(0, i, r) for i, r in enumerate(rows)])
    assert index.oldest_updated_ms(["ARRIVED", "BATCHED", "FAILED"]) == {
        "ARRIVED": T0 + 2,
        "BATCHED": T0 + 9,
    }


def counted(index: StatusIndex) -> dict[str, int]:
    """The files per state as SQLite counts them from the rows; the bytes transferred as the
    report adds them up must be what the index keeps."""
    moved = sum(line["bytes_transferred"] for line in index.report())
    assert index.bytes_transferred() == moved
    sql = "SELECT state, COUNT(*) FROM files GROUP BY state ORDER BY state"
    return dict(index._db.execute(sql).fetchall())


def test_the_files_per_state_are_kept_as_rows_come_move_and_go(index: StatusIndex) -> None:
    a, b, c = (file_state(n) for n in "abc")
    index.apply([put(0, 0, a), put(0, 1, b), put(1, 0, c)])
    assert index.counts_by_state() == counted(index) == {"ARRIVED": 3}
    index.apply([put(0, 2, file_state("a", "BATCHED")), put(0, 3, file_state("b", "ARRIVED"))])
    assert index.counts_by_state() == counted(index) == {"ARRIVED": 2, "BATCHED": 1}
    assert index.bytes_transferred() == 0
    index.apply([put(0, 5, file_state("b", "TRANSFERRED", size=700))])  # a new size, moved
    assert index.bytes_transferred() == 700
    index.apply([put(0, 6, file_state("b", "INGESTED", size=700))])
    assert index.counts_by_state() == counted(index) == {"ARRIVED": 1, "BATCHED": 1, "INGESTED": 1}
    index.apply([put(0, 7, file_state("b", "ARRIVED", size=800, version="800:2"))])
    assert index.bytes_transferred() == 0
    index.apply([put(1, 1, None, key=c["key"]), put(0, 8, file_state("a", "DONE", updated_ms=1))])
    assert index.counts_by_state() == counted(index) == {"ARRIVED": 1, "DONE": 1}
    assert index.bytes_transferred() == 100
    assert index.prune(before_ms=T0) == 1
    assert index.counts_by_state() == counted(index) == {"ARRIVED": 1}
    index.reset()
    assert index.counts_by_state() == counted(index) == {}


def test_an_index_laid_out_before_the_counts_is_counted_once_and_then_kept(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    with StatusIndex(path) as earlier:
        earlier.apply([put(0, i, file_state(f"f{i}", "DONE")) for i in range(3)])
    for layout in ("none", "by state only"):
        with sqlite3.connect(path) as db:  # as an earlier release laid it out
            for name in ("files_in", "files_out", "files_moved"):
                db.execute(f"DROP TRIGGER IF EXISTS {name}")
            db.execute("DROP TABLE state_counts")
            if layout != "none":
                db.execute("CREATE TABLE state_counts (state TEXT PRIMARY KEY, files INTEGER)")
                db.execute("INSERT INTO state_counts VALUES ('DONE', 99)")
            db.execute("PRAGMA user_version = 2")
        with StatusIndex(path) as again:
            assert again.counts_by_state() == counted(again)
            assert again.bytes_transferred() == 100 * sum(
                1 for r in again.query() if r["state"] == "DONE"
            )
    with StatusIndex(path) as again:
        again.apply([put(0, 3, file_state("f0", "ARRIVED", version="2:2"))])
        assert again.counts_by_state() == counted(again) == {"ARRIVED": 1, "DONE": 2}
        assert again.offsets() == {0: 4}


def test_counting_the_files_per_state_does_not_grow_with_the_files(index: StatusIndex) -> None:
    def steps() -> int:
        return sqlite_steps(index._db, index.counts_by_state)

    index.apply([put(0, 0, file_state("first", "DONE"))])
    one = steps()
    index.apply([put(0, i + 1, file_state(f"f{i}", "DONE")) for i in range(5000)])
    assert index.counts_by_state() == {"DONE": 5001}
    assert steps() == one


def test_a_view_keeps_no_counts_and_counts_its_rows_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    with StatusIndex(path) as full:  # a file that was a full index once
        full.apply([put(0, 0, file_state("a", "DONE"))])
    with StatusIndex(path, keep_records=False) as view:
        view.apply(
            [put(0, 1, file_state("b")), put(0, 2, file_state("a", "ARRIVED", version="2:2"))]
        )
        tables = {n for (n,) in view._db.execute("SELECT name FROM sqlite_master")}
        assert "state_counts" not in tables and "files_in" not in tables
        assert view.counts_by_state() == counted(view) == {"ARRIVED": 2}


def test_the_unsettled_files_are_listed_through_the_state_index(index: StatusIndex) -> None:
    states = ["DONE", "MISSING", "ARRIVED", "TRANSFERRED", "FAILED", "QUARANTINED", "DONE"]
    index.apply(put(0, i, file_state(f"f{i}", s)) for i, s in enumerate(states))
    listed = [(r["path"].rsplit("/", 1)[1], r["state"]) for r in index.query(unsettled=True)]
    assert listed == [
        ("f2", "ARRIVED"),
        ("f3", "TRANSFERRED"),
        ("f4", "FAILED"),
        ("f5", "QUARANTINED"),
    ]
    assert [r["state"] for r in index.query(state="DONE", unsettled=False)] == ["DONE", "DONE"]
    assert len(list(index.query())) == len(states)
    # Read through the state index: as many rows as are not settled, whatever the history.
    ran: list[str] = []
    connect = index._connect

    def traced() -> sqlite3.Connection:
        db = connect()
        db.set_trace_callback(ran.append)
        return db

    index._connect = traced  # type: ignore[method-assign]
    list(index.query(unsettled=True))
    (sql,) = [s for s in ran if s.startswith("SELECT")]
    plan = " ".join(str(row) for row in index._db.execute("EXPLAIN QUERY PLAN " + sql))
    assert "files_state" in plan, plan
