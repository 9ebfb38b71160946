"""The Clowder catalog against the Clowder double: hierarchy, metadata, by-path, faults, races."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import responses

from consumers.catalog.base import (
    CatalogPermanentError,
    CatalogTransientError,
    CatalogUnavailable,
    IngestItem,
    IngestResult,
)
from consumers.catalog.clowder import ClowderCatalog
from consumers.catalog.clowder_http import ClowderHttp
from consumers.catalog.naming import UAMAC_VOCAB, catalog_names
from terra_xfer import metrics
from terra_xfer.circuit_breaker import CircuitBreaker
from terra_xfer.config import Secret
from terra_xfer.errors import ConfigError, PermanentError, TransientError
from tests.doubles.clowder_api import ClowderDouble

KEY = "clowder-key-5f0c9a1e7b"
MOUNT = "/clowder/raw"
TS = "2017-08-24__12-40-01-916"
DATASET = f"stereoTop - {TS}"
CHAIN = ("stereoTop", "stereoTop - 2017", "stereoTop - 2017-08", "stereoTop - 2017-08-24")
CREATE_DATASET = "POST /api/datasets/createempty"
UPLOAD = "POST /api/uploadToDataset/:id"
LIST_FILES = "GET /api/datasets/:id/files"


@pytest.fixture
def clowder() -> Iterator[ClowderDouble]:
    with ClowderDouble(api_key=KEY, source_paths=(MOUNT + "/",)) as double:
        yield double


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


@pytest.fixture
def make_catalog(clowder: ClowderDouble, dest: Path) -> Iterator[Callable[..., ClowderCatalog]]:
    opened: list[ClowderCatalog] = []

    def make(**options: Any) -> ClowderCatalog:
        options = {"timeout_s": 10.0, **options}
        if options.pop("by_path", False):
            options.update(destination_root=str(dest), mounted_prefix=MOUNT)
        catalog = ClowderCatalog(clowder.url, options.pop("key", KEY), **options)
        opened.append(catalog)
        return catalog

    yield make
    for catalog in opened:
        catalog.close()


def capture(
    dest: Path,
    file_name: str,
    content: bytes = b"\x00\x01 raw bytes \r\n",
    sensor: str = "stereoTop",
    date: str = "2017-08-24",
    timestamp: str | None = TS,
    **extra: Any,
) -> IngestItem:
    """A file written at the destination, and its ingest item."""
    names = catalog_names(sensor, date, timestamp, file_name)
    path = dest / "raw_data" / sensor / date / (timestamp or "") / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return IngestItem(
        key=f"ua-mac/LemnaTec/MovingSensor/{sensor}/{date}/{timestamp}/{file_name}",
        dataset_name=names.dataset_name,
        collections=names.collections,
        file_path=str(path),
        file_name=file_name,
        size=len(content),
        checksum=None,
        as_dataset_metadata=names.as_dataset_metadata,
        **extra,
    )


def retried(
    catalog: ClowderCatalog, item: IngestItem, failures: list[str] | None = None
) -> IngestResult:
    """``catalog.ingest(item)`` called again after each transient failure (as the ingest stage
    does, later), whose messages go to ``failures``."""
    failures = [] if failures is None else failures
    while len(failures) < 20:
        try:
            return catalog.ingest(item)
        except CatalogTransientError as exc:
            failures.append(str(exc))
    raise AssertionError(f"still failing after 20 attempts: {failures[-1]}")


def only(clowder: ClowderDouble, kind: str, name: str) -> str:
    found = clowder.store.named(kind, name)
    assert len(found) == 1, f"{len(found)} {kind}s named {name!r}"
    return found[0]


def file_names(clowder: ClowderDouble, dataset: str) -> list[str]:
    return sorted(f["filename"] for f in clowder.store.files_in(dataset))


def test_a_file_lands_in_its_dataset_under_the_collection_chain(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    result = make_catalog().ingest(capture(dest, "ef0b_left.bin"))

    chain = [only(clowder, "collection", title) for title in CHAIN]
    dataset = only(clowder, "dataset", DATASET)
    assert result == IngestResult(dataset, result.file_id, tuple(chain), True)
    assert clowder.store.parents(chain[0]) == []
    assert [clowder.store.children(c) for c in chain[:-1]] == [[c] for c in chain[1:]]
    assert clowder.store.collections_of(dataset) == [chain[-1]]
    assert file_names(clowder, dataset) == ["ef0b_left.bin"]


def test_daily_sensors_get_a_date_named_dataset(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    item = capture(dest, "2016-04-05_12-34-58_enviromentlogger.json", sensor="EnvironmentLogger",
                   date="2016-04-05", timestamp=None)  # fmt: skip

    make_catalog().ingest(item)

    dataset = only(clowder, "dataset", "EnvironmentLogger - 2016-04-05")
    assert clowder.store.collections_of(dataset) == [
        only(clowder, "collection", "EnvironmentLogger - 2016-04-05")
    ]


def test_metadata_json_goes_to_the_dataset_as_jsonld_not_as_a_file(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    raw = {"lemnatec_measurement_metadata": {"gantry.position": {"x.m": 205.0}}, "v": [1, 2]}
    item = capture(dest, "ef0b_metadata.json", json.dumps(raw).encode())
    catalog = make_catalog()

    first, replay = catalog.ingest(item), make_catalog().ingest(item)

    dataset = only(clowder, "dataset", DATASET)
    docs = clowder.store.metadata("dataset", dataset)
    assert (first.file_id, first.created, replay.created) == (None, True, False)
    assert file_names(clowder, dataset) == []
    assert [d["content"] for d in docs] == [
        {"lemnatec_measurement_metadata": {"gantry_position": {"x_m": 205.0}}, "v": [1, 2]}
    ]
    assert docs[0]["@context"][1] == {"@vocab": UAMAC_VOCAB}
    assert docs[0]["agent"] == {
        "@type": "cat:user",
        "user_id": f"{clowder.url}/api/users/{clowder.store.user_id}",
    }
    assert len(clowder.seen("POST /api/datasets/:id/metadata.jsonld")) == 1


def test_inline_dataset_metadata_is_attached_once_before_the_file(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    catalog = make_catalog()
    for side in ("left", "right", "left"):
        catalog.ingest(capture(dest, f"ef0b_{side}.bin", dataset_metadata={"snap.shot": 7}))

    dataset = only(clowder, "dataset", DATASET)
    assert [d["content"] for d in clowder.store.metadata("dataset", dataset)] == [{"snap_shot": 7}]
    assert file_names(clowder, dataset) == ["ef0b_left.bin", "ef0b_right.bin"]


@pytest.mark.parametrize("by_path", [False, True])
def test_file_metadata_travels_with_the_file(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog], by_path: bool
) -> None:
    item = capture(dest, "ef0b_left.bin", file_metadata={"camera.side": "left"})

    result = make_catalog(by_path=by_path).ingest(item)

    assert result.file_id is not None
    docs = clowder.store.metadata("file", result.file_id)
    assert [d["content"] for d in docs] == [{"camera_side": "left"}]
    assert len(clowder.seen(UPLOAD)) == 1


def test_without_a_mount_the_bytes_are_uploaded(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    item = capture(dest, "ef0b_left.bin", b"\xff\x00--not-a-boundary\r\n" * 64)

    result = make_catalog().ingest(item)

    stored = clowder.store.file(str(result.file_id))
    assert stored is not None
    assert (stored["loader"], stored["content"]) == ("bytes", Path(item.file_path).read_bytes())


def test_with_a_mount_the_file_is_added_by_path_without_bytes(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    item = capture(dest, "ef0b_left.bin", b"x" * 4096)

    result = make_catalog(by_path=True).ingest(item)

    stored = clowder.store.file(str(result.file_id))
    assert stored is not None
    assert (stored["loader"], stored["content"], stored["filename"]) == (
        "path",
        None,
        "ef0b_left.bin",
    )
    assert stored["path"] == f"{MOUNT}/raw_data/stereoTop/2017-08-24/{TS}/ef0b_left.bin"


def test_a_replayed_file_is_not_added_again(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    item = capture(dest, "ef0b_left.bin")
    first = make_catalog().ingest(item)

    replays = [make_catalog().ingest(item), make_catalog(by_path=True).ingest(item)]

    assert [(r.dataset_id, r.file_id, r.created) for r in replays] == [
        (first.dataset_id, first.file_id, False)
    ] * 2
    assert len(clowder.seen(UPLOAD)) == 1
    assert clowder.store.counts() == {"collections": 4, "datasets": 1, "files": 1, "metadata": 0}


def test_by_path_outside_the_destination_root_or_the_sourcepaths_is_permanent(
    clowder: ClowderDouble, dest: Path, tmp_path: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    elsewhere = capture(tmp_path / "elsewhere", "ef0b_left.bin")
    with pytest.raises(CatalogPermanentError, match="not under the destination root"):
        make_catalog(by_path=True).ingest(elsewhere)

    refused = make_catalog(destination_root=str(dest), mounted_prefix="/not/mounted")
    with pytest.raises(CatalogPermanentError, match=r"No files uploaded.*sourcepaths") as caught:
        refused.ingest(capture(dest, "ef0b_left.bin"))
    assert caught.value.status == 400


def test_racing_workers_converge_on_one_collection_chain_and_one_dataset(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    # Both workers search, find nothing, and create at the same moment.
    clowder.faults.rendezvous("POST /api/collections", parties=2)
    clowder.faults.rendezvous(CREATE_DATASET, parties=2)
    items = [capture(dest, "ef0b_left.bin"), capture(dest, "ef0b_right.bin")]
    workers = [make_catalog(), make_catalog()]

    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda pair: pair[0].ingest(pair[1]), zip(workers, items, strict=True))
        )

    assert len(clowder.seen(CREATE_DATASET)) == 2  # the race happened
    dataset = only(clowder, "dataset", DATASET)
    chain = tuple(only(clowder, "collection", title) for title in CHAIN)
    assert [(r.dataset_id, r.collection_ids) for r in results] == [(dataset, chain)] * 2
    assert file_names(clowder, dataset) == ["ef0b_left.bin", "ef0b_right.bin"]
    assert clowder.store.collections_of(dataset) == [chain[-1]]
    assert clowder.store.counts()["collections"] == 4


@pytest.mark.parametrize("by_path", [False, True])
def test_two_workers_adding_the_same_file_at_once_agree_on_one(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog], by_path: bool
) -> None:
    item = capture(dest, "ef0b_left.bin")
    workers = [make_catalog(by_path=by_path) for _ in range(2)]
    for worker in workers:  # the hierarchy exists; only the file is raced
        worker.ingest(capture(dest, "ef0b_right.bin"))
    clowder.faults.rendezvous(UPLOAD, parties=2)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda worker: worker.ingest(item), workers))

    dataset = only(clowder, "dataset", DATASET)
    lefts = [f["id"] for f in clowder.store.files_in(dataset) if f["filename"] == item.file_name]
    assert len(clowder.seen(UPLOAD)) == 3  # right once, left twice
    assert {r.file_id for r in results} == {min(lefts)}
    assert sorted(r.created for r in results) == [False, True]
    # an upload that lost is deleted; a by-path entry that lost is left, unused
    assert len(lefts) == (2 if by_path else 1)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_raised_at_once_and_the_retry_adds_nothing_twice(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog], status: int
) -> None:
    clowder.faults.fail(CREATE_DATASET, status=status, times=2)
    clowder.faults.fail(UPLOAD, status=status)
    failures: list[str] = []

    result = retried(make_catalog(), capture(dest, "ef0b_left.bin"), failures)

    assert result.created is True
    assert len(failures) == 3 and all(str(status) in f for f in failures)
    assert clowder.store.counts() == {"collections": 4, "datasets": 1, "files": 1, "metadata": 0}


def test_a_retry_does_not_look_up_again_what_was_found(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    clowder.faults.fail(UPLOAD, status=502, times=3)

    retried(make_catalog(), capture(dest, "ef0b_left.bin"))

    # each collection searched, created and searched again, once; the dataset likewise
    assert len(clowder.seen("GET /api/collections")) == 8
    assert len(clowder.seen("GET /api/datasets")) == 2
    assert len(clowder.seen(UPLOAD)) == 4


def test_a_reset_connection_is_retried(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    clowder.faults.reset(LIST_FILES, times=2)

    result = retried(make_catalog(), capture(dest, "ef0b_left.bin"))

    assert result.created is True and result.file_id is not None
    assert len(clowder.seen(LIST_FILES)) == 4  # two resets, the check, the re-check after adding


@pytest.mark.parametrize("lose_answer", ["reset", "502"])
def test_a_lost_answer_after_the_change_adds_no_duplicate(
    clowder: ClowderDouble,
    dest: Path,
    make_catalog: Callable[..., ClowderCatalog],
    lose_answer: str,
) -> None:
    for route in (CREATE_DATASET, UPLOAD, "POST /api/collections/newCollectionWithParent"):
        if lose_answer == "reset":
            clowder.faults.reset(route, after=True)
        else:
            clowder.faults.fail(route, status=502, after=True)

    result = retried(make_catalog(), capture(dest, "ef0b_left.bin"))

    dataset = only(clowder, "dataset", DATASET)
    assert result.dataset_id == dataset
    assert [f["id"] for f in clowder.store.files_in(dataset)] == [result.file_id]
    assert clowder.store.counts() == {"collections": 4, "datasets": 1, "files": 1, "metadata": 0}


def test_a_slow_answer_times_out_and_is_retried(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    clowder.faults.stall(UPLOAD)

    result = retried(make_catalog(timeout_s=0.3), capture(dest, "ef0b_left.bin"))
    clowder.faults.release()

    assert result.created is True
    assert len(clowder.seen(UPLOAD)) == 2
    assert clowder.store.counts()["files"] == 1


def test_a_create_served_after_the_client_gave_up_does_not_divert_later_items(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    clowder.faults.stall(CREATE_DATASET, serve=True)

    first = retried(make_catalog(timeout_s=0.3), capture(dest, "ef0b_left.bin"))
    clowder.faults.release()
    assert clowder.wait_until(lambda: len(clowder.store.named("dataset", DATASET)) == 2)
    later = make_catalog().ingest(capture(dest, "ef0b_right.bin"))

    assert later.dataset_id == first.dataset_id == min(clowder.store.named("dataset", DATASET))
    assert file_names(clowder, first.dataset_id) == ["ef0b_left.bin", "ef0b_right.bin"]


def test_a_transient_failure_is_raised_without_waiting_or_retrying(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    clowder.faults.fail("GET /api/collections", status=502, times=10, body="proxy down")

    with pytest.raises(CatalogTransientError, match="502 proxy down") as caught:
        make_catalog().ingest(capture(dest, "ef0b_left.bin"))

    assert isinstance(caught.value, TransientError)
    assert len(clowder.seen()) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, '"Missing parameter [name]"'), (403, '"You are not the owner of the space"')],
)
def test_a_refusal_is_permanent_with_its_reason_and_not_retried(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog],
    status: int, body: str,
) -> None:  # fmt: skip
    clowder.faults.fail(CREATE_DATASET, status=status, body=body)

    with pytest.raises(CatalogPermanentError) as caught:
        make_catalog().ingest(capture(dest, "ef0b_left.bin"))

    assert isinstance(caught.value, PermanentError)
    assert caught.value.status == status
    assert json.loads(body) in caught.value.reason and "createempty" in caught.value.reason
    assert len(clowder.seen(CREATE_DATASET)) == 1


def test_a_refusal_with_remembered_ids_is_tried_once_afresh_then_raised(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    catalog = make_catalog()
    catalog.ingest(capture(dest, "ef0b_left.bin"))
    searches = len(clowder.seen("GET /api/datasets"))
    clowder.faults.fail(UPLOAD, status=400, body='"Dataset with id=x does not exist"', times=2)

    with pytest.raises(CatalogPermanentError, match="does not exist"):
        catalog.ingest(capture(dest, "ef0b_right.bin"))

    assert len(clowder.seen(UPLOAD)) == 3
    assert len(clowder.seen("GET /api/datasets")) == searches + 1


def test_a_wrong_key_is_permanent_and_the_key_is_not_in_the_error(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    wrong = "wrong-key-d41d8cd98f00"
    catalog = make_catalog(key=Secret(wrong))

    with pytest.raises(CatalogPermanentError, match="401 Not authorized") as caught:
        catalog.ingest(capture(dest, "ef0b_left.bin"))

    assert wrong not in str(caught.value) and wrong not in repr(catalog)


def test_the_key_never_reaches_a_log_line_an_error_or_a_url(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)  # urllib3 logs every URL at this level
    clowder.faults.fail(CREATE_DATASET, status=500)
    clowder.faults.reset(UPLOAD)
    catalog = make_catalog()
    failures: list[str] = []
    retried(catalog, capture(dest, "ef0b_metadata.json", b'{"a": 1}'), failures)
    retried(catalog, capture(dest, "ef0b_left.bin"), failures)
    clowder.faults.fail(UPLOAD, status=403, body=f"refused for key={KEY}", times=2)
    with pytest.raises(CatalogPermanentError) as caught:
        catalog.ingest(capture(dest, "ef0b_right.bin"))

    assert len(failures) == 2 and "POST /api/uploadToDataset" in caplog.text
    assert KEY not in caplog.text and KEY not in " ".join(failures)
    assert KEY not in str(caught.value) and "key=***" in str(caught.value)
    assert KEY not in repr(catalog)
    assert {s.key_via for s in clowder.seen()} == {"header"}
    assert all("key" not in s.query for s in clowder.seen())


def test_a_dataset_deleted_behind_the_cache_is_made_again(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    catalog = make_catalog()
    first = catalog.ingest(capture(dest, "ef0b_left.bin"))
    clowder.store.delete("dataset", first.dataset_id)
    failures: list[str] = []

    again = retried(catalog, capture(dest, "ef0b_right.bin"), failures)

    # Clowder answers a file list of a missing dataset with a 500: after three, it looks afresh
    assert len(failures) == 3 and all("500" in f for f in failures)
    dataset = only(clowder, "dataset", DATASET)
    assert again.dataset_id == dataset != first.dataset_id
    assert file_names(clowder, dataset) == ["ef0b_right.bin"]


def test_an_existing_unlinked_dataset_is_used_and_linked(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    old = clowder.store.create("dataset", DATASET)

    result = make_catalog().ingest(capture(dest, "ef0b_left.bin"))

    assert (result.dataset_id, result.created) == (old, True)
    assert clowder.store.collections_of(old) == [only(clowder, "collection", CHAIN[-1])]


def test_everything_made_goes_into_the_space(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    space = clowder.store.create_space("ua-mac raw data")
    existing = clowder.store.create("collection", "stereoTop")

    result = make_catalog(space_id=space).ingest(capture(dest, "ef0b_left.bin"))

    assert result.collection_ids[0] == existing
    for collection in result.collection_ids:
        assert clowder.store.spaces_of("collection", collection) == [space]
    assert clowder.store.spaces_of("dataset", result.dataset_id) == [space]


LINK_DATASET = "POST /api/collections/:coll_id/datasets/:ds_id"
SPACE_DATASET = "POST /api/spaces/:spaceId/addDatasetToSpace/:datasetId"


def test_a_link_that_fails_transiently_is_made_again_alone(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    old = clowder.store.create("dataset", DATASET)
    clowder.faults.fail(LINK_DATASET, status=502)
    catalog = make_catalog()

    with pytest.raises(CatalogTransientError, match="502"):
        catalog.ingest(capture(dest, "ef0b_left.bin"))
    searches = len(clowder.seen())
    result = catalog.ingest(capture(dest, "ef0b_left.bin"))

    assert result.dataset_id == old
    assert clowder.store.collections_of(old) == [only(clowder, "collection", CHAIN[-1])]
    assert [s.route for s in clowder.seen()[searches:]] == [
        LINK_DATASET,
        LIST_FILES,
        UPLOAD,
        LIST_FILES,
    ]


def test_a_link_is_made_once_per_process_and_again_after_a_lost_answer(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    space = clowder.store.create_space("ua-mac raw data")
    old = clowder.store.create("dataset", DATASET)
    clowder.faults.reset(SPACE_DATASET, after=True)  # linked, but the answer is lost
    catalog = make_catalog(space_id=space)

    for side in ("left", "right", "left"):
        retried(catalog, capture(dest, f"ef0b_{side}.bin"))

    assert len(clowder.seen(LINK_DATASET)) == 1
    assert len(clowder.seen(SPACE_DATASET)) == 2  # linking what is linked succeeds
    assert clowder.store.spaces_of("dataset", old) == [space]
    assert len(clowder.seen("GET /api/datasets")) == 1


def test_a_refused_link_is_logged_and_not_tried_again(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    clowder.store.create("dataset", DATASET)
    clowder.faults.fail(LINK_DATASET, status=403, body='"not the owner"')
    catalog = make_catalog()

    first = catalog.ingest(capture(dest, "ef0b_left.bin"))
    second = catalog.ingest(capture(dest, "ef0b_right.bin"))

    assert first.dataset_id == second.dataset_id
    assert len(clowder.seen(LINK_DATASET)) == 1
    assert "could not link dataset" in caplog.text and "not the owner" in caplog.text


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_clowder_gets_one_trial_request_per_open_period(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="consumers.catalog.clowder_http")
    clock = Clock()
    breaker = CircuitBreaker(
        window=10, min_calls=5, failure_ratio=0.5, first_open_s=2.0, clock=clock
    )
    clowder.faults.mix(seed=1, error=1.0, reset=0.0, lost=0.0)  # every request a 5xx
    catalog = make_catalog(breaker=breaker)
    item = capture(dest, "ef0b_left.bin")

    def attempt() -> CatalogTransientError:
        with pytest.raises(CatalogTransientError) as caught:
            catalog.ingest(item)
        return caught.value

    failures = [attempt() for _ in range(12)]
    assert len(clowder.seen()) == 5  # then nothing more is sent
    assert isinstance(failures[-1], CatalogUnavailable) and failures[-1].retry_after == 2.0
    assert "keeps failing" in caplog.text
    circuit = ("terra_xfer_catalog_circuit_state", {"catalog": "clowder"})
    assert metrics.REGISTRY.get_sample_value(*circuit) == 2

    clock.now += 2.0
    assert not isinstance(attempt(), CatalogUnavailable)  # the trial, failed
    assert isinstance(attempt(), CatalogUnavailable) and len(clowder.seen()) == 6
    clowder.faults.calm()
    clock.now += 4.0

    assert catalog.ingest(item).created is True
    assert "answers again" in caplog.text
    assert metrics.REGISTRY.get_sample_value(*circuit) == 0


def test_configuration_mistakes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="url"):
        ClowderCatalog("", KEY)
    with pytest.raises(ConfigError, match="key"):
        ClowderCatalog("http://clowder.example", "")
    with pytest.raises(ConfigError, match="destination root"):
        ClowderCatalog("http://clowder.example", KEY, mounted_prefix=MOUNT)


@responses.activate
def test_a_redirect_is_refused_not_followed_with_the_key() -> None:
    responses.add(
        responses.GET, "http://clowder.example/api/me", status=302,
        headers={"Location": f"http://elsewhere.example/login?key={KEY}"},
    )  # fmt: skip
    http = ClowderHttp("http://clowder.example/", KEY)

    with pytest.raises(CatalogPermanentError, match="redirected") as caught:
        http.get("me")
    http.close()

    assert caught.value.status == 302 and KEY not in str(caught.value)
    assert [call.request.url for call in responses.calls] == ["http://clowder.example/api/me"]


def test_scrub_masks_the_key_anywhere() -> None:
    http = ClowderHttp("http://clowder.example", KEY)
    http.close()

    assert http.scrub(f"GET /x?key={KEY}&a=1 {KEY}") == "GET /x?key=***&a=1 ***"
    assert http.scrub("GET /x?apikey=other") == "GET /x?apikey=***"


def test_many_workers_on_many_captures_leave_no_duplicates(
    clowder: ClowderDouble, dest: Path, make_catalog: Callable[..., ClowderCatalog]
) -> None:
    items = [
        capture(dest, f"{n:02d}_{side}.bin", timestamp=f"2017-08-24__12-40-{n:02d}-000")
        for n in range(4)
        for side in ("left", "right")
    ]
    start = threading.Barrier(4)

    def worker(catalog: ClowderCatalog) -> list[IngestResult]:
        start.wait(timeout=30)
        return [catalog.ingest(i) for i in items]

    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(worker, [make_catalog() for _ in range(4)]))

    assert clowder.store.counts() == {"collections": 4, "datasets": 4, "files": 8, "metadata": 0}
    ids = [[(r.dataset_id, r.file_id) for r in run] for run in runs]
    assert ids == [ids[0]] * 4
