"""The Clowder test double: its routes are Clowder's, pyclowder works against it, faults fire.

Clowder's route table and OpenAPI description come from clowder-framework/clowder, copied into
``tests/data/clowder`` with its licence (see the README there; ``CLOWDER_API_DATA`` points
elsewhere); the double may serve only routes found in both.
"""

from __future__ import annotations

import gc
import json
import os
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyclowder.collections as pcollections
import pyclowder.datasets as pdatasets
import pyclowder.files as pfiles
import pytest
import requests
import yaml

from tests.doubles.clowder_api import ROUTES, ClowderDouble

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "clowder"
CLOWDER_DATA = Path(os.environ.get("CLOWDER_API_DATA", DEFAULT_DATA))
KEY = "double-key"
METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
AGENT = {"@type": "cat:user", "user_id": "http://clowder.example/api/users/1"}

needs_data = pytest.mark.skipif(  # only when CLOWDER_API_DATA points at nothing
    not (CLOWDER_DATA / "routes").is_file(), reason="Clowder route table not available"
)


@pytest.fixture
def clowder(tmp_path: Path) -> Iterator[ClowderDouble]:
    with ClowderDouble(api_key=KEY, source_paths=(f"{tmp_path}/mounted/",)) as double:
        yield double


def api(clowder: ClowderDouble, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"X-API-Key": KEY, **kwargs.pop("headers", {})}
    timeout = kwargs.pop("timeout", 10)
    url = f"{clowder.url}/api/{path}"
    return requests.request(method, url, headers=headers, timeout=timeout, **kwargs)


def play_routes() -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path regex, path) of Clowder's route table, in its order (Play takes the first)."""
    table = []
    for line in (CLOWDER_DATA / "routes").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in METHODS:
            pattern = re.sub(r"\$(\w+)<([^>]+)>", r"(?:\2)", parts[1])
            pattern = re.sub(r":\w+", "[^/]+", re.sub(r"\*\w+", ".+", pattern))
            table.append((parts[0], re.compile(pattern), parts[1]))
    return table


@needs_data
def test_every_route_of_the_double_is_in_clowders_route_table() -> None:
    table = play_routes()
    for route in ROUTES:
        sample = re.sub(r":\w+", "0123456789abcdef01234567", route.path)
        first = next((p for m, rx, p in table if m == route.method and rx.fullmatch(sample)), None)

        assert first is not None, f"{route.name} is not a Clowder route"
        assert re.sub(r":\w+", ":", first) == re.sub(r":\w+", ":", route.path), (
            f"{route.name} would be served by Clowder's {first}"
        )


@needs_data
def test_every_route_of_the_double_is_in_clowders_openapi_description() -> None:
    spec = yaml.safe_load((CLOWDER_DATA / "swagger.yml").read_text())
    documented = {
        (method.upper(), re.sub(r"\{\w+\}", "{}", path))
        for path, operations in spec["paths"].items()
        for method in operations
    }
    for route in ROUTES:
        path = re.sub(r":\w+", "{}", route.path.removeprefix("/api"))
        assert (route.method, path) in documented, f"{route.name} is not in swagger.yml"


def test_the_key_is_checked_from_header_or_query(clowder: ClowderDouble) -> None:
    url = f"{clowder.url}/api/datasets"

    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"X-API-Key": "wrong"}, timeout=10).status_code == 401
    assert requests.get(url, headers={"X-API-Key": KEY}, timeout=10).status_code == 200
    assert requests.get(url, params={"key": KEY}, timeout=10).status_code == 200
    assert [s.key_via for s in clowder.seen()] == [None, None, "header", "query"]


def test_an_unknown_route_is_404(clowder: ClowderDouble) -> None:
    assert api(clowder, "GET", "nothing/here").status_code == 404


def test_pyclowder_builds_datasets_and_collections_on_the_double(clowder: ClowderDouble) -> None:
    host = clowder.url + "/"
    root = pcollections.create_empty(None, host, KEY, "stereoTop", "")
    dataset = pdatasets.create_empty(None, host, KEY, "stereoTop - 2017-08-24", "", root)

    assert [d["id"] for d in pcollections.get_datasets(None, host, KEY, root)] == [dataset]
    assert pdatasets.get_info(None, host, KEY, dataset)["name"] == "stereoTop - 2017-08-24"
    assert pdatasets.get_file_list(None, host, KEY, dataset) == []


def test_a_parent_sent_as_a_list_as_pyclowder_does_leaves_the_collection_unlinked(
    clowder: ClowderDouble,
) -> None:
    """Clowder reads ``parentId`` as a string; pyclowder sends ``[id]`` and the link is lost."""
    host = clowder.url + "/"
    root = pcollections.create_empty(None, host, KEY, "stereoTop", "")
    child = pcollections.create_empty(None, host, KEY, "stereoTop - 2017", "", parentid=root)

    assert pcollections.get_child_collections(None, host, KEY, root) == []
    linked = api(clowder, "POST", "collections/newCollectionWithParent",
                 json={"name": "stereoTop - 2018", "parentId": root}).json()["id"]  # fmt: skip
    assert [c["id"] for c in pcollections.get_child_collections(None, host, KEY, root)] == [linked]
    assert child not in clowder.store.children(root)


def test_pyclowder_uploads_bytes_and_metadata(clowder: ClowderDouble, tmp_path: Path) -> None:
    host = clowder.url + "/"
    dataset = pdatasets.create_empty(None, host, KEY, "ds", "")
    data = tmp_path / "x_left.bin"
    data.write_bytes(b"\x00\r\n--boundary?\n\xff" * 100)
    connector = SimpleNamespace(
        mounted_paths={}, ssl_verify=True, post=requests.post, message_process=lambda *a: None
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # pyclowder never closes the file
        file_id = pfiles.upload_to_dataset(connector, host, KEY, dataset, str(data))
        gc.collect()
    pdatasets.upload_metadata(
        connector, host, KEY, dataset, {"@context": "x", "content": {"a": 1}, "agent": AGENT}
    )

    assert clowder.store.file(file_id)["content"] == data.read_bytes()  # type: ignore[index]
    assert pdatasets.get_file_list(None, host, KEY, dataset)[0]["filename"] == "x_left.bin"
    assert [d["content"] for d in clowder.store.metadata("dataset", dataset)] == [{"a": 1}]


def test_metadata_needs_an_agent_and_no_dotted_keys(clowder: ClowderDouble) -> None:
    dataset = api(clowder, "POST", "datasets/createempty", json={"name": "ds"}).json()["id"]
    path = f"datasets/{dataset}/metadata.jsonld"

    no_agent = api(clowder, "POST", path, json={"content": {"a": 1}})
    dotted = api(clowder, "POST", path, json={"content": {"a.b": 1}, "agent": AGENT})
    fine = api(clowder, "POST", path, json={"content": {"a_b": 1}, "agent": AGENT})

    assert (no_agent.status_code, no_agent.json()) == (400, "Creator data is missing or incorrect.")
    assert dotted.status_code == 500
    assert fine.status_code == 200
    assert [d["content"] for d in api(clowder, "GET", path).json()] == [{"a_b": 1}]


def test_a_file_is_registered_by_path_only_under_the_source_paths(
    clowder: ClowderDouble, tmp_path: Path
) -> None:
    dataset = api(clowder, "POST", "datasets/createempty", json={"name": "ds"}).json()["id"]
    mounted = tmp_path / "mounted" / "raw" / "a_left.bin"
    mounted.parent.mkdir(parents=True)
    mounted.write_bytes(b"12345")
    path = f"uploadToDataset/{dataset}"

    inside = api(
        clowder,
        "POST",
        path,
        files={"file": (None, json.dumps({"path": str(mounted), "md": {"@context": "c", "k": 1}}))},
    )
    outside = api(
        clowder, "POST", path, files={"file": (None, json.dumps({"path": "/etc/passwd"}))}
    )

    assert outside.status_code == 400 and outside.json() == "No files uploaded"
    stored = clowder.store.file(inside.json()["id"])
    assert stored is not None
    assert (stored["loader"], stored["path"], stored["size"], stored["filename"]) == (
        "path", str(mounted), 5, "a_left.bin",
    )  # fmt: skip
    assert [d["content"] for d in clowder.store.metadata("file", stored["id"])] == [{"k": 1}]


def test_search_by_title_exact_or_substring_newest_first(clowder: ClowderDouble) -> None:
    made = [
        api(clowder, "POST", "datasets/createempty", json={"name": name}).json()["id"]
        for name in ("VNIR - 2018-01-09", "VNIR - 2018-01-09", "VNIR - 2018-01-09__00", "SWIR")
    ]

    def titles(**params: str) -> list[str]:
        return [d["id"] for d in api(clowder, "GET", "datasets", params=params).json()]

    assert titles(title="VNIR - 2018-01-09", exact="true") == [made[1], made[0]]
    assert titles(title="vnir") == [made[2], made[1], made[0]]
    assert titles(title="VNIR", limit="1") == [made[2]]


def test_the_file_list_of_a_missing_dataset_is_a_500_as_in_clowder(clowder: ClowderDouble) -> None:
    assert api(clowder, "GET", "datasets/0123456789abcdef01234567/files").status_code == 500


def test_a_status_fault_answers_the_next_n_requests_then_stops(clowder: ClowderDouble) -> None:
    clowder.faults.fail("GET /api/datasets", status=502, times=2, body="bad gateway")

    answers = [api(clowder, "GET", "datasets") for _ in range(3)]

    assert [(r.status_code, r.text) for r in answers[:2]] == [(502, "bad gateway")] * 2
    assert answers[2].status_code == 200


def test_a_fault_after_the_action_keeps_the_change_and_loses_the_answer(
    clowder: ClowderDouble,
) -> None:
    clowder.faults.fail("POST /api/datasets/createempty", status=504, after=True)

    lost = api(clowder, "POST", "datasets/createempty", json={"name": "ds"})

    assert lost.status_code == 504
    assert len(clowder.store.named("dataset", "ds")) == 1


def test_a_reset_drops_the_connection(clowder: ClowderDouble) -> None:
    clowder.faults.reset("POST /api/datasets/createempty")
    clowder.faults.reset("POST /api/datasets/createempty", after=True)

    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            api(clowder, "POST", "datasets/createempty", json={"name": "ds"})

    assert len(clowder.store.named("dataset", "ds")) == 1
    assert api(clowder, "POST", "datasets/createempty", json={"name": "ds"}).status_code == 200


def test_a_stalled_request_is_held_until_release_and_then_dropped_undone(
    clowder: ClowderDouble,
) -> None:
    clowder.faults.stall("POST /api/datasets/createempty")

    with pytest.raises(requests.Timeout):
        api(clowder, "POST", "datasets/createempty", json={"name": "ds"}, timeout=0.2)
    clowder.faults.release()

    assert clowder.store.named("dataset", "ds") == []
    assert api(clowder, "POST", "datasets/createempty", json={"name": "ds"}).status_code == 200


def test_a_stall_that_serves_carries_the_request_out_late(clowder: ClowderDouble) -> None:
    clowder.faults.stall("POST /api/datasets/createempty", serve=True)

    with pytest.raises(requests.Timeout):
        api(clowder, "POST", "datasets/createempty", json={"name": "ds"}, timeout=0.2)
    assert clowder.store.named("dataset", "ds") == []
    clowder.faults.release()

    assert clowder.wait_until(lambda: len(clowder.store.named("dataset", "ds")) == 1)


def test_a_rendezvous_holds_requests_until_all_parties_arrive(clowder: ClowderDouble) -> None:
    clowder.faults.rendezvous("GET /api/datasets", parties=2)
    answers: list[int] = []
    first = threading.Thread(
        target=lambda: answers.append(api(clowder, "GET", "datasets").status_code)
    )
    first.start()

    second = api(clowder, "GET", "datasets")
    first.join(timeout=30)

    assert (second.status_code, answers) == (200, [200])
    assert len(clowder.seen("GET /api/datasets")) == 2


def test_a_fault_mix_fails_requests_at_random_in_its_shares(clowder: ClowderDouble) -> None:
    clowder.faults.mix(seed=11, error=0.10, reset=0.05, lost=0.05)
    outcomes: list[str] = []
    for n in range(300):
        try:
            status = api(clowder, "POST", "datasets/createempty", json={"name": f"ds{n}"})
        except requests.ConnectionError:
            outcomes.append("reset")
        else:
            outcomes.append(str(status.status_code))
    drawn = clowder.faults.drawn

    failed = sum(drawn[s] for s in ("500", "502", "503", "504"))
    assert outcomes.count("reset") == drawn["reset"] + drawn["lost"]
    assert sum(o.startswith("5") for o in outcomes) == failed
    assert outcomes.count("200") == 300 - failed - drawn["reset"] - drawn["lost"]
    assert 15 <= failed <= 50 and 5 <= drawn["reset"] <= 30 and 5 <= drawn["lost"] <= 30
    assert {s for s in ("500", "502", "503", "504") if drawn[s]} == {"500", "502", "503", "504"}
    # a lost answer was carried out; a 5xx or a plain reset was not
    assert clowder.store.counts()["datasets"] == outcomes.count("200") + drawn["lost"]
    assert clowder.requests() == {"POST /api/datasets/createempty": 300}


def test_a_calm_double_stops_drawing_faults(clowder: ClowderDouble) -> None:
    clowder.faults.mix(seed=1, error=1.0, reset=0.0, lost=0.0)
    assert api(clowder, "GET", "datasets").status_code >= 500

    clowder.faults.calm()

    assert api(clowder, "GET", "datasets").status_code == 200
    with pytest.raises(ValueError):
        clowder.faults.mix(seed=1, error=0.6, reset=0.3, lost=0.2)


def test_an_unknown_fault_route_is_refused(clowder: ClowderDouble) -> None:
    with pytest.raises(KeyError):
        clowder.faults.fail("GET /api/nothing")


def test_stopping_releases_a_stalled_request(tmp_path: Path) -> None:
    double = ClowderDouble(api_key=KEY)
    with double:
        double.faults.stall("GET /api/datasets")
        with pytest.raises(requests.Timeout):
            api(double, "GET", "datasets", timeout=0.2)
    assert double.seen("GET /api/datasets")


def test_stopping_breaks_an_unfinished_rendezvous() -> None:
    answers: list[int] = []
    double = ClowderDouble(api_key=KEY)
    with double:
        double.faults.rendezvous("GET /api/datasets", parties=2)
        alone = threading.Thread(
            target=lambda: answers.append(api(double, "GET", "datasets").status_code)
        )
        alone.start()
        assert double.wait_until(lambda: len(double.seen()) == 1)
    alone.join(timeout=30)

    assert answers == [503]
