"""The local SQLite catalog: the TERRA-REF hierarchy, idempotent replays, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from consumers.catalog.base import (
    CatalogPermanentError,
    CatalogTransientError,
    IngestItem,
    IngestResult,
)
from consumers.catalog.local import LocalCatalog
from consumers.catalog.naming import catalog_names

TS = "2017-08-24__12-40-01-916"
DATASET = f"stereoTop - {TS}"
CHAIN = ("stereoTop", "stereoTop - 2017", "stereoTop - 2017-08", "stereoTop - 2017-08-24")


def item(
    file_name: str,
    timestamp: str | None = TS,
    sensor: str = "stereoTop",
    date: str = "2017-08-24",
    **extra: object,
) -> IngestItem:
    names = catalog_names(sensor, date, timestamp, file_name)
    path = f"/dest/raw_data/{sensor}/{date}/{timestamp or ''}/{file_name}"
    return IngestItem(
        key=f"ua-mac/{sensor}/{file_name}",
        dataset_name=names.dataset_name,
        collections=names.collections,
        file_path=str(extra.pop("file_path", path)),
        file_name=file_name,
        size=8_147_712,
        checksum="ab12",
        as_dataset_metadata=names.as_dataset_metadata,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[LocalCatalog]:
    with LocalCatalog(tmp_path / "catalog.sqlite") as opened:
        yield opened


def test_a_file_lands_in_its_dataset_under_the_collection_chain(catalog: LocalCatalog) -> None:
    result = catalog.ingest(item("ef0b_left.bin"))

    assert result.created is True
    assert len(result.collection_ids) == 4 and result.file_id is not None
    assert catalog.datasets() == [DATASET]
    assert catalog.files_in(DATASET) == ["ef0b_left.bin"]
    assert catalog.collections() == [
        ("stereoTop", None),
        ("stereoTop - 2017", "stereoTop"),
        ("stereoTop - 2017-08", "stereoTop - 2017"),
        ("stereoTop - 2017-08-24", "stereoTop - 2017-08"),
    ]
    assert catalog.dataset_collections(DATASET) == ["stereoTop - 2017-08-24"]


def test_replaying_the_same_items_adds_nothing(catalog: LocalCatalog) -> None:
    items = [
        item("ef0b_left.bin"),
        item("ef0b_right.bin"),
        item("ef0b_metadata.json", dataset_metadata={"gantry.x": 1.5}),
    ]
    first = [catalog.ingest(i) for i in items]
    counts = catalog.counts()

    replay = [catalog.ingest(i) for i in items]

    assert [r.created for r in first] == [True, True, True]
    assert [r.created for r in replay] == [False, False, False]
    assert [(r.dataset_id, r.file_id, r.collection_ids) for r in replay] == [
        (r.dataset_id, r.file_id, r.collection_ids) for r in first
    ]
    assert (
        catalog.counts() == counts == {"collections": 4, "datasets": 1, "files": 2, "metadata": 1}
    )


def test_metadata_json_is_attached_to_the_dataset_cleaned_and_not_added_as_a_file(
    catalog: LocalCatalog, tmp_path: Path
) -> None:
    md_file = tmp_path / "ef0b_metadata.json"
    md_file.write_text(json.dumps({"lemnatec_measurement_metadata": {"sensor.x": "on"}}))

    result = catalog.ingest(item("ef0b_metadata.json", file_path=md_file))

    assert result.file_id is None and result.created is True
    assert catalog.files_in(DATASET) == []
    assert catalog.dataset_metadata(DATASET) == [
        {"lemnatec_measurement_metadata": {"sensor_x": "on"}}
    ]


def test_metadata_given_inline_wins_over_the_file(catalog: LocalCatalog) -> None:
    catalog.ingest(item("ef0b_metadata.json", file_path="/nowhere", dataset_metadata={"a": 1}))

    assert catalog.dataset_metadata(DATASET) == [{"a": 1}]


def test_metadata_missing_at_the_destination_is_a_permanent_error(
    catalog: LocalCatalog, tmp_path: Path
) -> None:
    # Not a fault of the content (see test_catalog_unreadable_metadata): nothing is filed.
    with pytest.raises(CatalogPermanentError, match="cannot read metadata"):
        catalog.ingest(item("x_metadata.json", file_path=tmp_path / "missing_metadata.json"))
    assert catalog.counts()["datasets"] == 0


def test_new_metadata_content_is_added_beside_the_old(catalog: LocalCatalog) -> None:
    catalog.ingest(item("ef0b_metadata.json", dataset_metadata={"v": 1}))
    result = catalog.ingest(item("ef0b_metadata.json", dataset_metadata={"v": 2}))

    assert result.created is True
    assert catalog.dataset_metadata(DATASET) == [{"v": 1}, {"v": 2}]


def test_dataset_metadata_on_a_file_and_file_metadata_are_attached(catalog: LocalCatalog) -> None:
    catalog.ingest(
        item("ef0b_left.bin", dataset_metadata={"snap.shot": 7}, file_metadata={"side.x": "left"})
    )

    assert catalog.dataset_metadata(DATASET) == [{"snap_shot": 7}]
    assert catalog.file_metadata(DATASET, "ef0b_left.bin") == [{"side_x": "left"}]
    assert catalog.files_in(DATASET) == ["ef0b_left.bin"]


def test_daily_sensors_share_collections_and_get_one_dataset_a_day(catalog: LocalCatalog) -> None:
    for minute in ("12-34-58", "12-35-58"):
        catalog.ingest(
            item(
                f"2016-04-05_{minute}_environmentlogger.json",
                None,
                "EnvironmentLogger",
                "2016-04-05",
            )
        )
    catalog.ingest(
        item("2016-04-06_00-00-01_environmentlogger.json", None, "EnvironmentLogger", "2016-04-06")
    )

    assert catalog.datasets() == [
        "EnvironmentLogger - 2016-04-05",
        "EnvironmentLogger - 2016-04-06",
    ]
    assert len(catalog.files_in("EnvironmentLogger - 2016-04-05")) == 2
    assert catalog.counts()["collections"] == 5  # sensor, year, month, two days


def test_ids_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    with LocalCatalog(path) as first:
        made = first.ingest(item("ef0b_left.bin"))
    with LocalCatalog(path) as again:
        replayed = again.ingest(item("ef0b_left.bin"))
        mode = again._rows("PRAGMA journal_mode")[0][0]

    assert (replayed.dataset_id, replayed.file_id, replayed.created) == (
        made.dataset_id,
        made.file_id,
        False,
    )
    assert mode == "wal"


def test_two_threads_racing_on_one_file_make_one_of_everything(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    items = [item(f"{n:04d}_left.bin") for n in range(20)]
    start = threading.Barrier(2)

    def worker() -> list[IngestResult]:
        with LocalCatalog(path) as mine:
            start.wait(timeout=30)
            return [mine.ingest(i) for i in items]

    with ThreadPoolExecutor(2) as pool:
        runs = [f.result(timeout=60) for f in [pool.submit(worker), pool.submit(worker)]]

    assert {r.dataset_id for run in runs for r in run} == {runs[0][0].dataset_id}
    assert [a.created + b.created for a, b in zip(*runs, strict=True)] == [1] * len(items)
    with LocalCatalog(path) as check:
        assert check.counts() == {"collections": 4, "datasets": 1, "files": 20, "metadata": 0}


def _process_worker(path: str, go: object, out: object) -> None:
    """Ingest the same items as the other processes, once ``go`` is set."""
    items = [item(f"{n:04d}_right.bin") for n in range(15)]
    with LocalCatalog(path) as mine:
        go.wait(30)  # type: ignore[attr-defined]
        results = [mine.ingest(i) for i in items]
    out.put([(r.dataset_id, r.file_id, r.created) for r in results])  # type: ignore[attr-defined]


def test_processes_racing_on_one_file_make_one_of_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "catalog.sqlite")
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(path, go, out)) for _ in range(3)]
    for proc in procs:
        proc.start()
    go.set()
    runs = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    out.close()
    out.join_thread()

    assert all(proc.exitcode == 0 for proc in procs)
    assert len({ds for run in runs for ds, _, _ in run}) == 1
    assert [sum(run[n][2] for run in runs) for n in range(15)] == [1] * 15
    assert len({(run[n][1]) for run in runs for n in range(15)}) == 15
    with LocalCatalog(path) as check:
        assert check.counts() == {"collections": 4, "datasets": 1, "files": 15, "metadata": 0}


def test_a_writer_that_never_lets_go_is_a_transient_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    LocalCatalog(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with LocalCatalog(path, busy_timeout_s=0.01, busy_attempts=3) as blocked:
            with pytest.raises(CatalogTransientError, match="locked"):
                blocked.ingest(item("ef0b_left.bin"))
            holder.execute("ROLLBACK")
            assert blocked.ingest(item("ef0b_left.bin")).created is True
    finally:
        holder.close()
