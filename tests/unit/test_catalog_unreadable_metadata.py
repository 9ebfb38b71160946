"""A ``*_metadata.json`` that holds no JSON object is still catalogued, in both backends.

Cut short, corrupt or not UTF-8, it cannot be attached to its dataset; it is added as an ordinary
file instead, its dataset gets one note saying which file could not be read and why, and the
result carries a warning. A replay adds no second file and no second note.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.catalog.base import (
    CatalogPermanentError,
    IngestItem,
    IngestResult,
    parse_metadata,
)
from consumers.catalog.clowder import ClowderCatalog
from consumers.catalog.local import LocalCatalog
from consumers.catalog.naming import UAMAC_VOCAB, catalog_names
from tests.doubles.clowder_api import ClowderDouble

KEY = "clowder-key-2b7e"
MOUNT = "/clowder/raw"
TS = "2017-08-24__12-40-01-916"
DATASET = f"stereoTop - {TS}"
NAME = "ef0b_metadata.json"
UPLOAD = "POST /api/uploadToDataset/:id"
POST_METADATA = "POST /api/datasets/:id/metadata.jsonld"
GOOD = json.dumps({"lemnatec": {"gantry": {"camera.exposure": "auto"}}}, indent=2).encode()
CLEANED = {"lemnatec": {"gantry": {"camera_exposure": "auto"}}}  # as attached: no dotted keys
BROKEN = {
    "not JSON": b"<html><body>502 Bad Gateway</body></html>\n",
    "truncated": GOOD[: GOOD.index(b"auto") + 2],  # an upload cut short mid-value
    "not UTF-8": GOOD.replace(b'"auto"', b'"auto\xe9"'),
}
REASONS = {
    "not JSON": "not JSON: Expecting value: line 1 column 1 (char 0)",
    "truncated": "not JSON: Unterminated string starting at: line 4 column 26 (char 59)",
    "not UTF-8": "not UTF-8: 'utf-8' codec can't decode byte 0xe9 in position 64: invalid"
    " continuation byte",
}


def sidecar(dest: Path, content: bytes, file_name: str = NAME) -> IngestItem:
    """A metadata file written at the destination, and its ingest item."""
    names = catalog_names("stereoTop", "2017-08-24", TS, file_name)
    path = dest / "raw_data" / "stereoTop" / "2017-08-24" / TS / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return IngestItem(
        key=f"ua-mac/LemnaTec/MovingSensor/stereoTop/2017-08-24/{TS}/{file_name}",
        dataset_name=names.dataset_name,
        collections=names.collections,
        file_path=str(path),
        file_name=file_name,
        size=len(content),
        checksum=None,
        as_dataset_metadata=names.as_dataset_metadata,
    )


def note(reason: str) -> dict[str, Any]:
    return {
        "unreadable_metadata": {
            "file": NAME,
            "reason": reason,
            "action": "registered as a file of this dataset",
            "noted_by": "terra-xfer ingest",
        }
    }


def warning(reason: str) -> str:
    return f"metadata {NAME} could not be read ({reason}); registered as a file of its dataset"


@pytest.mark.parametrize("kind", BROKEN)
def test_the_reason_names_what_is_wrong_and_is_the_same_every_time(kind: str) -> None:
    assert parse_metadata(BROKEN[kind]) == parse_metadata(BROKEN[kind]) == REASONS[kind]


def test_json_that_is_no_object_is_unreadable_and_an_object_is_read() -> None:
    assert parse_metadata(b"[1, 2]") == "a JSON array, not an object"
    assert parse_metadata(b"null") == "a JSON null, not an object"
    assert parse_metadata(b"[" * 100_000) == "not JSON: nested too deeply to read"
    assert parse_metadata(GOOD) == json.loads(GOOD)


def test_a_byte_order_mark_is_read_and_nan_is_not_json() -> None:
    assert parse_metadata(b"\xef\xbb\xbf" + GOOD) == json.loads(GOOD)  # as Windows tools save
    assert parse_metadata(b'{"gain": NaN}') == "not JSON: NaN is not a JSON value"
    assert parse_metadata(b'{"gain": -Infinity}') == "not JSON: -Infinity is not a JSON value"


# The local catalog


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalCatalog]:
    with LocalCatalog(tmp_path / "catalog.sqlite") as opened:
        yield opened


@pytest.mark.parametrize("kind", BROKEN)
def test_local_files_a_broken_sidecar_with_one_note_and_a_replay_adds_nothing(
    local: LocalCatalog, tmp_path: Path, kind: str
) -> None:
    item = sidecar(tmp_path / "dest", BROKEN[kind])

    first = local.ingest(item)
    counts = local.counts()
    replays = [local.ingest(item), *local.ingest_many([item])]
    assert all(isinstance(r, IngestResult) for r in replays)

    assert first.created is True and first.file_id is not None
    assert first.warning == warning(REASONS[kind])
    assert local.files_in(DATASET) == [NAME]
    assert local.dataset_metadata(DATASET) == [note(REASONS[kind])]
    assert counts == {"collections": 4, "datasets": 1, "files": 1, "metadata": 1}
    assert [(r.created, r.file_id, r.warning) for r in replays if isinstance(r, IngestResult)] == [
        (False, first.file_id, first.warning)
    ] * 2
    assert local.counts() == counts


def test_local_batch_files_a_broken_sidecar_beside_its_capture(
    local: LocalCatalog, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    items = [
        sidecar(dest, b"\x00" * 16, "ef0b_left.bin"),
        sidecar(dest, BROKEN["truncated"]),
        sidecar(dest, GOOD, "ab12_metadata.json"),
    ]

    left, broken, good = local.ingest_many(items)

    assert isinstance(left, IngestResult) and left.warning is None
    assert isinstance(broken, IngestResult) and broken.warning == warning(REASONS["truncated"])
    assert isinstance(good, IngestResult) and (good.file_id, good.warning) == (None, None)
    assert local.files_in(DATASET) == ["ef0b_left.bin", NAME]
    assert local.dataset_metadata(DATASET) == [note(REASONS["truncated"]), CLEANED]


# The Clowder catalog (through its double)


@pytest.fixture
def clowder() -> Iterator[ClowderDouble]:
    with ClowderDouble(api_key=KEY, source_paths=(MOUNT + "/",)) as double:
        yield double


@pytest.fixture
def make_clowder(
    clowder: ClowderDouble, tmp_path: Path
) -> Iterator[Callable[[bool], ClowderCatalog]]:
    opened: list[ClowderCatalog] = []

    def make(by_path: bool) -> ClowderCatalog:
        mount: dict[str, Any] = {}
        if by_path:
            mount = {"destination_root": str(tmp_path / "dest"), "mounted_prefix": MOUNT}
        opened.append(ClowderCatalog(clowder.url, KEY, timeout_s=10.0, **mount))
        return opened[-1]

    yield make
    for catalog in opened:
        catalog.close()


@pytest.mark.parametrize("by_path", [False, True], ids=["upload", "by_path"])
@pytest.mark.parametrize("kind", BROKEN)
def test_clowder_files_a_broken_sidecar_with_one_note_and_a_replay_adds_nothing(
    clowder: ClowderDouble,
    make_clowder: Callable[[bool], ClowderCatalog],
    tmp_path: Path,
    kind: str,
    by_path: bool,
) -> None:
    item = sidecar(tmp_path / "dest", BROKEN[kind])

    first = make_clowder(by_path).ingest(item)
    replay = make_clowder(by_path).ingest(item)  # a new worker: it remembers nothing

    (dataset,) = clowder.store.named("dataset", DATASET)
    assert first.created is True and first.warning == warning(REASONS[kind])
    assert (replay.created, replay.file_id, replay.warning) == (False, first.file_id, first.warning)
    assert [f["id"] for f in clowder.store.files_in(dataset)] == [first.file_id]
    stored = clowder.store.file(str(first.file_id))
    assert stored is not None and stored["filename"] == NAME
    if by_path:
        assert stored["path"] == f"{MOUNT}/raw_data/stereoTop/2017-08-24/{TS}/{NAME}"
    else:
        assert stored["content"] == BROKEN[kind]
    (doc,) = clowder.store.metadata("dataset", dataset)
    assert doc["content"] == note(REASONS[kind])
    assert doc["agent"] == {
        "@type": "cat:user",
        "user_id": f"{clowder.url}/api/users/{clowder.store.user_id}",
    }
    assert doc["@context"][1] == {"@vocab": UAMAC_VOCAB}
    assert (len(clowder.seen(UPLOAD)), len(clowder.seen(POST_METADATA))) == (1, 1)


def test_clowder_keeps_a_good_sidecar_as_dataset_metadata_without_a_warning(
    clowder: ClowderDouble, make_clowder: Callable[[bool], ClowderCatalog], tmp_path: Path
) -> None:
    result = make_clowder(False).ingest(sidecar(tmp_path / "dest", GOOD))

    (dataset,) = clowder.store.named("dataset", DATASET)
    assert (result.file_id, result.warning) == (None, None)
    assert clowder.store.files_in(dataset) == []
    assert [d["content"] for d in clowder.store.metadata("dataset", dataset)] == [CLEANED]


def test_a_sidecar_missing_at_the_destination_is_refused_before_any_request(
    clowder: ClowderDouble, make_clowder: Callable[[bool], ClowderCatalog], tmp_path: Path
) -> None:
    item = sidecar(tmp_path / "dest", GOOD)
    Path(item.file_path).unlink()

    with pytest.raises(CatalogPermanentError, match="cannot read metadata"):
        make_clowder(False).ingest(item)

    assert clowder.seen() == []
