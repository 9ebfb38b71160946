"""Ingest files a consumed batch with one catalog call and answers every file, in order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from consumers.catalog.base import (
    CatalogPermanentError,
    CatalogTransientError,
    IngestItem,
    IngestResult,
)
from consumers.ingest import Ingest
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError
from terra_xfer.stages import registry
from terra_xfer.stages.outputs import Decoded
from tests.samples import sample

CODEC = Codec()
DIR = "LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916"


class Catalog:
    """Refuses the file names in ``refuse``; records each call."""

    name = "fake"

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.calls: list[list[str]] = []
        self.batch_error: Exception | None = None

    def ingest(self, item: IngestItem) -> IngestResult:
        self.calls.append([item.file_name])
        if item.file_name in self.refuse:
            raise CatalogPermanentError(f"{item.file_name} refused")
        return IngestResult("d1", f"f-{item.file_name}", ("c1",), True)

    def ingest_many(self, items: Sequence[IngestItem]) -> list[IngestResult | PermanentError]:
        if self.batch_error is not None:
            raise self.batch_error
        self.calls.append([i.file_name for i in items])
        return [
            CatalogPermanentError(f"{i.file_name} refused")
            if i.file_name in self.refuse
            else IngestResult("d1", f"f-{i.file_name}", ("c1",), True)
            for i in items
        ]

    def close(self) -> None:
        return None


def transferred(name: str, path: str | None = None) -> Decoded:
    value = sample("FileTransferred")
    path = path or f"{DIR}/{name}"
    value |= {"key": f"ua-mac/{path}", "path": path, "dest_path": f"raw/{name}"}
    return Decoded(None, "FileTransferred", value)  # type: ignore[arg-type]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Ingest] = []

    def build(catalog: Catalog) -> Ingest:
        made.append(Ingest(Config(), registry.spec("ingest"), catalog))
        return made[-1]

    yield build
    for ingest in made:
        ingest.loop.close()


def answers(outputs: Sequence[Any]) -> list[tuple[str, str]]:
    out = []
    for o in outputs:
        record, value = CODEC.decode(o.value)
        out.append((record, value["key"].rsplit("/", 1)[1]))
    return out


def test_one_catalog_call_per_batch_and_one_answer_per_file_in_order(make: Any) -> None:
    catalog = Catalog(refuse=frozenset({"b_left.bin"}))
    ingest = make(catalog)
    failed = Decoded(None, "FileTransferFailed", sample("FileTransferFailed"))  # type: ignore[arg-type]
    batch = [
        transferred("a_left.bin"),
        failed,
        transferred("x.bin", path="elsewhere/x.bin"),  # cannot be named: refused before the call
        transferred("b_left.bin"),
        transferred("c_left.bin"),
    ]
    outputs = ingest._handle(batch)

    assert catalog.calls == [["a_left.bin", "b_left.bin", "c_left.bin"]]
    assert answers(outputs) == [
        ("FileIngested", "a_left.bin"),
        ("FileIngestFailed", "x.bin"),
        ("FileIngestFailed", "b_left.bin"),
        ("FileIngested", "c_left.bin"),
    ]
    assert CODEC.decode(outputs[3].value)[1]["file_id"] == "f-c_left.bin"
    assert ingest.ingested == 2


def test_a_batch_refused_as_a_whole_is_filed_one_by_one(make: Any) -> None:
    catalog = Catalog(refuse=frozenset({"b_left.bin"}))
    catalog.batch_error = CatalogPermanentError("the batch is refused")
    ingest = make(catalog)
    outputs = ingest._handle([transferred("a_left.bin"), transferred("b_left.bin")])

    assert catalog.calls == [["a_left.bin"], ["b_left.bin"]]
    assert answers(outputs) == [("FileIngested", "a_left.bin"), ("FileIngestFailed", "b_left.bin")]


def test_a_transient_catalog_error_fails_the_whole_batch(make: Any) -> None:
    catalog = Catalog()
    catalog.batch_error = CatalogTransientError("locked")
    ingest = make(catalog)
    with pytest.raises(CatalogTransientError):
        ingest._handle([transferred("a_left.bin")])
