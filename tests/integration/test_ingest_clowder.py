"""Ingest into Clowder (through the v1 API double) in the running pipeline, with faults."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from consumers.batcher import Batcher
from consumers.catalog.clowder import ClowderCatalog
from consumers.deleter import Deleter
from consumers.ingest import Ingest
from consumers.monitor import Monitor
from consumers.state.keeper import StateKeeper
from consumers.transfer.local import LocalTransfer
from producers.gantry.service import GantryProducer, log_source
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.doubles.clowder_api import ClowderDouble
from tests.kafka_read import read_all
from tests.pipeline import gantry_config, run_until, write_night

pytestmark = pytest.mark.broker
UPLOAD = "POST /api/uploadToDataset/:id"


@pytest.fixture
def clowder() -> Iterator[ClowderDouble]:
    with ClowderDouble(api_key="k-test") as double:
        yield double


def latest_states(config: Config) -> dict[str, dict[str, Any]]:
    return {v["key"]: v for _, v in read_all(config.kafka, config.topic("files.state"))}


def all_done(states: dict[str, dict[str, Any]], keys: set[str]) -> bool:
    return all(states.get(k, {}).get("state") == "DONE" for k in keys)


def test_clowder_faults_retried_without_duplicates_and_permanent_ones_visible(
    pipeline_config: Config, clowder: ClowderDouble
) -> None:
    config = gantry_config(pipeline_config, max_files=50)
    create_topics(config)
    shipped = sorted(set(write_night(config, 150, seed=12)))
    clowder.faults.fail(UPLOAD, 503, times=3)
    clowder.faults.reset(UPLOAD, times=2)
    clowder.faults.fail("POST /api/datasets/createempty", 502, times=2)
    backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
    catalog = ClowderCatalog(
        clowder.url,
        "k-test",
        destination_root=str(config.transfer.destination_root),
    )
    stages = [
        GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog")),
        Batcher(config, registry.spec("batcher"), backend),
        Monitor(config, registry.spec("monitor"), backend),
        StateKeeper(config, registry.spec("state-keeper")),
        Ingest(config, registry.spec("ingest"), catalog),
        Deleter(config, registry.spec("deleter"), backend),
    ]
    keys = {f"ua-mac/{rel}" for rel in shipped}
    try:
        run_until(
            stages,
            lambda: all_done(latest_states(config), keys),
            timeout_s=240,
        )
        # A permanent error: the next upload is refused outright (400).
        clowder.faults.fail(UPLOAD, 400, times=2, body="bad file field")  # also the fresh retry
        extra = sorted(set(write_night(config, 12, seed=77)) - set(shipped))
        extra_keys = {f"ua-mac/{rel}" for rel in extra}

        def settled() -> bool:
            states = latest_states(config)
            return all(
                states.get(k, {}).get("state") == "DONE" or states.get(k, {}).get("reason")
                for k in extra_keys
            )

        run_until(stages, settled, timeout_s=120)
    finally:
        for s in stages:
            s.close()  # type: ignore[attr-defined]
        backend.close()
    store = clowder.store
    files = [f for d in store.search("dataset", None, False, 10_000) for f in store.files_in(d)]
    names = Counter(f["filename"] for f in files)
    assert max(names.values()) == 1  # retried requests added nothing twice
    not_metadata = [r for r in shipped if not r.endswith("_metadata.json")]
    assert {n for n in names} >= {r.rsplit("/", 1)[1] for r in not_metadata}
    titles = Counter(
        store.dataset_json(d)["name"] for d in store.search("dataset", None, False, 10_000)
    )
    assert max(titles.values()) == 1
    states = latest_states(config)
    refused = [states[k] for k in extra_keys if states[k]["reason"]]
    assert len(refused) == 1 and refused[0]["reason"].startswith("ingest: ")
    assert "400" in refused[0]["reason"] and refused[0]["state"] == "DELETED"
