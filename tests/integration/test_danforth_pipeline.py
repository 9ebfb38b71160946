"""LemnaTec snapshots to DONE: transfer, catalog (one dataset per snapshot, metadata first),
deletion from the Danforth cache, snapshots added while running, and an ingest replay."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.batcher import Batcher
from consumers.catalog.local import LocalCatalog
from consumers.deleter import Deleter
from consumers.ingest import Ingest
from consumers.monitor import Monitor
from consumers.state.keeper import StateKeeper
from consumers.state.view import StateFollower
from consumers.transfer.local import LocalTransfer
from producers.danforth.service import DanforthProducer
from terra_xfer.config import BrokerConfig, Config
from terra_xfer.kafka_tools import run_tool
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import read_all, wait_group_empty
from tests.lemnatec import LemnaTecSite, Planned, danforth_config, new_site
from tests.pipeline import Stepping, gantry_config
from tests.pngread import read_png
from tests.postgres import PostgresServer

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


class Pipeline:
    """The Danforth producer and every consumer stage, each in its own thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
        self.view = StateFollower(config, config.status.index_path.with_name("batcher.sqlite"))
        self.stages: list[Any] = [
            DanforthProducer(config, registry.spec("danforth")),
            Batcher(config, registry.spec("batcher"), self.backend, self.view),
            Monitor(config, registry.spec("monitor"), self.backend),
            StateKeeper(config, registry.spec("state-keeper")),
            Ingest(config, registry.spec("ingest"), LocalCatalog(config.catalog.path)),
            Deleter(config, registry.spec("deleter"), self.backend),
        ]
        self.runner = Stepping(self.stages)

    def states(self) -> dict[str, dict[str, Any]]:
        latest = {}
        for _, v in read_all(self.config.kafka, self.config.topic("files.state")):
            latest[v["key"]] = v
        return latest

    def all_done(self, planned: list[Planned]) -> Callable[[], bool]:
        keys = {f"danforth/{path}" for p in planned for path in p.files()}

        def done() -> bool:
            states = self.states()
            return all(states.get(k, {}).get("state") == "DONE" for k in keys)

        return done

    def close(self) -> None:
        try:
            self.runner.join()
        finally:
            for stage in self.stages:
                stage.close()
            self.view.close()
            self.backend.close()


@pytest.fixture
def config(
    pipeline_config: Config, postgres: PostgresServer, tmp_path: Path, unique: Callable[[str], str]
) -> Config:
    cfg = danforth_config(
        gantry_config(pipeline_config), postgres, unique("lt").replace("-", "_"), tmp_path
    )
    create_topics(cfg)
    return cfg


@pytest.fixture
def site(config: Config, postgres: PostgresServer) -> Iterator[LemnaTecSite]:
    made = new_site(postgres, config)
    try:
        yield made
    finally:
        made.close()


def dataset_name(metadata: dict[str, Any]) -> str:
    stamp = metadata["timestamp"].replace(" ", "__").replace(":", "-").replace(".", "-")
    return f"ddpscIndoorSuite - {stamp}"


def test_snapshots_to_done_with_datasets_and_metadata(config: Config, site: LemnaTecSite) -> None:
    first = site.add(15, watering_every=5, spoil={(3, 1): "missing", (8, 9): "not_zip"})
    pipeline = Pipeline(config)
    try:
        pipeline.runner.start()
        assert pipeline.runner.wait(pipeline.all_done(first), timeout_s=300)
        later = site.add(10, watering_every=4, spoil={(2, 6): "truncated"})  # while running
        assert pipeline.runner.wait(pipeline.all_done(first + later), timeout_s=300)
    finally:
        pipeline.close()
    planned = first + later
    metadata = snapshot_metadata(config)
    assert sorted(metadata) == [p.id for p in planned]
    assert not [p for p in config.danforth.cache_root.rglob("*")]  # files and snapshot dirs gone
    with LocalCatalog(config.catalog.path) as catalog:
        assert catalog.datasets() == sorted(dataset_name(m) for m in metadata.values())
        for p in planned:
            name = dataset_name(metadata[p.id])
            assert catalog.dataset_metadata(name) == [metadata[p.id]]
            assert catalog.files_in(name) == sorted(p.images)
            assert catalog.dataset_collections(name) == ["ddpscIndoorSuite - 2017-06-28"]
            for image in p.images:
                (attached,) = catalog.file_metadata(name, image)
                assert attached["snapshot_id"] == p.id and attached["image_id"] > 0
        counts = catalog.counts()
    incomplete = {p.id for p in planned if p.spoiled}
    assert {i for i, m in metadata.items() if not m["complete"]} == incomplete == {4, 9, 18}
    dest = config.transfer.destination_root / "sites/danforth/raw_data/ddpscIndoorSuite"
    some = dest / f"snapshot{planned[0].id}" / planned[0].images[0]
    assert read_png(some.read_bytes()).colour_type == 2  # a visible image, demosaicked

    replay_ingest(config)
    with LocalCatalog(config.catalog.path) as catalog:
        assert catalog.counts() == counts  # nothing new: the same idempotence as the gantry


def snapshot_metadata(config: Config) -> dict[int, dict[str, Any]]:
    """Each snapshot's metadata, as its metadata file's event carried it (the file is deleted)."""
    found = {}
    for _, v in read_all(config.kafka, config.topic("files.arrived")):
        if v["path"].endswith("_metadata.json"):
            content = json.loads(v["dataset_metadata"])
            found[content["snapshot_id"]] = content
    return found


def replay_ingest(config: Config) -> None:
    """Reset ingest to the start of files.transferred and run it over everything again."""
    wait_group_empty(config.kafka, config.group("ingest"))
    done = run_tool(
        BrokerConfig().kafka_version,
        "consumer-groups",
        [
            *("--bootstrap-server", config.kafka.bootstrap_servers),
            *("--group", config.group("ingest"), "--topic", config.topic("files.transferred")),
            *("--reset-offsets", "--to-earliest", "--execute"),
        ],
    )
    assert done.returncode == 0, done.stderr
    transferred = len(read_all(config.kafka, config.topic("files.transferred")))
    ingest = Ingest(config, registry.spec("ingest"), LocalCatalog(config.catalog.path))
    try:
        with Stepping([ingest], ["ingest"]) as running:
            assert running.wait(lambda: running.handled["ingest"] >= transferred, timeout_s=120)
    finally:
        ingest.close()
