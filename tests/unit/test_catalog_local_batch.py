"""The local catalog files a batch in one transaction; a refused item leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.catalog import local
from consumers.catalog.base import CatalogPermanentError, IngestItem, IngestResult
from consumers.catalog.local import LocalCatalog
from consumers.catalog.naming import catalog_names

TS = "2017-08-24__12-40-01-916"


def item(file_name: str, timestamp: str = TS, **extra: Any) -> IngestItem:
    names = catalog_names("stereoTop", "2017-08-24", timestamp, file_name)
    return IngestItem(
        key=f"ua-mac/stereoTop/{timestamp}/{file_name}",
        dataset_name=names.dataset_name,
        collections=names.collections,
        file_path=f"/dest/raw_data/stereoTop/2017-08-24/{timestamp}/{file_name}",
        file_name=file_name,
        size=10,
        checksum=None,
        as_dataset_metadata=names.as_dataset_metadata,
        **extra,
    )


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[LocalCatalog]:
    with LocalCatalog(tmp_path / "catalog.sqlite") as opened:
        yield opened


def test_a_batch_gives_the_same_answers_as_one_item_at_a_time(tmp_path: Path) -> None:
    items = [
        item("a_left.bin"),
        item("a_right.bin"),
        item("b_left.bin", "2017-08-24__12-41-00-000"),
    ]
    with (
        LocalCatalog(tmp_path / "one.sqlite") as one,
        LocalCatalog(tmp_path / "many.sqlite") as many,
    ):
        singly = [one.ingest(i) for i in items]
        together = many.ingest_many(items)
        assert together == singly
        assert many.counts() == one.counts()
        assert many.ingest_many(items) == [
            IngestResult(r.dataset_id, r.file_id, r.collection_ids, created=False) for r in singly
        ]


def test_a_refused_item_is_rolled_back_alone(
    catalog: LocalCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refused item's new dataset is undone, and the next item of that dataset makes it anew
    (it must not reuse the id the rolled-back item had remembered)."""
    real = local._add_file

    def add_file(db: Any, dataset_id: int, it: IngestItem) -> tuple[int, bool]:
        if it.file_name == "refused.bin":
            raise CatalogPermanentError("refused")
        return real(db, dataset_id, it)

    monkeypatch.setattr(local, "_add_file", add_file)
    other = "2017-08-24__13-00-00-000"
    outcomes = catalog.ingest_many(
        [item("a.bin"), item("refused.bin", other), item("b.bin", other)]
    )

    assert isinstance(outcomes[0], IngestResult) and isinstance(outcomes[2], IngestResult)
    assert isinstance(outcomes[1], CatalogPermanentError)
    assert catalog.files_in(f"stereoTop - {other}") == ["b.bin"]
    assert catalog.counts()["datasets"] == 2


def test_unreadable_metadata_refuses_only_its_own_item(
    catalog: LocalCatalog, tmp_path: Path
) -> None:
    names = catalog_names("stereoTop", "2017-08-24", TS, "x_metadata.json")
    broken = IngestItem(
        key="ua-mac/x_metadata.json",
        dataset_name=names.dataset_name,
        collections=names.collections,
        file_path=str(tmp_path / "missing_metadata.json"),
        file_name="x_metadata.json",
        size=1,
        checksum=None,
        as_dataset_metadata=True,
    )
    outcomes = catalog.ingest_many([item("a.bin"), broken, item("b.bin")])

    assert [type(o).__name__ for o in outcomes] == [
        "IngestResult",
        "CatalogPermanentError",
        "IngestResult",
    ]
    assert catalog.files_in(f"stereoTop - {TS}") == ["a.bin", "b.bin"]


def test_a_failure_of_the_database_commits_nothing(
    catalog: LocalCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = local._ingest
    calls: list[str] = []

    def crash_on_second(db: Any, it: IngestItem, metadata: Any, known: Any = None) -> Any:
        calls.append(it.file_name)
        if len(calls) == 2:
            raise RuntimeError("the process dies mid-batch")
        return real(db, it, metadata, known)

    monkeypatch.setattr(local, "_ingest", crash_on_second)
    with pytest.raises(RuntimeError):
        catalog.ingest_many([item("a.bin"), item("b.bin")])

    assert catalog.counts() == {"collections": 0, "datasets": 0, "files": 0, "metadata": 0}
