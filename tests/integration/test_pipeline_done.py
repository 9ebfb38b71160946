"""Arrival to DONE: transfer, ingest, deletion and the state record, then a full replay."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
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
from producers.gantry.service import GantryProducer, log_source
from terra_xfer.config import BrokerConfig, Config
from terra_xfer.kafka_tools import run_tool
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import read_all, wait_group_empty
from tests.pipeline import START, Stepping, gantry_config, run_until, sha256, write_night

pytestmark = pytest.mark.broker
STAGES = ("batcher", "monitor", "state-keeper", "ingest", "deleter")


class Pipeline:
    """Every stage in one thread, stepped in turn, as `terra-xfer up` would run them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
        self.view = StateFollower(config, config.status.index_path.with_name("batcher.sqlite"))
        self.stages: list[Any] = [
            GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog")),
            Batcher(config, registry.spec("batcher"), self.backend, self.view),
            Monitor(config, registry.spec("monitor"), self.backend),
            StateKeeper(config, registry.spec("state-keeper")),
            Ingest(config, registry.spec("ingest"), LocalCatalog(config.catalog.path)),
            Deleter(config, registry.spec("deleter"), self.backend),
        ]

    def states(self) -> dict[str, dict[str, Any]]:
        latest = {}
        for _, v in read_all(self.config.kafka, self.config.topic("files.state")):
            latest[v["key"]] = v
        return latest

    def run_until_done(self, keys: set[str]) -> dict[str, dict[str, Any]]:
        def done() -> bool:
            states = self.states()
            return all(states.get(k, {}).get("state") == "DONE" for k in keys)

        run_until(self.stages, done, timeout_s=300)
        return self.states()

    def close(self) -> None:
        for stage in self.stages:
            stage.close()
        self.view.close()
        self.backend.close()


@pytest.fixture
def config(pipeline_config: Config) -> Iterator[Config]:
    cfg = gantry_config(pipeline_config)
    create_topics(cfg)
    yield cfg


def reset_groups(config: Config) -> None:
    for group in map(config.group, STAGES):
        wait_group_empty(config.kafka, group)
        done = run_tool(
            BrokerConfig().kafka_version,
            "consumer-groups",
            [
                "--bootstrap-server",
                config.kafka.bootstrap_servers,
                "--group",
                group,
                "--reset-offsets",
                "--to-earliest",
                "--all-topics",
                "--execute",
            ],
        )
        assert done.returncode == 0, done.stderr


def events(config: Config, topic: str) -> list[dict[str, Any]]:
    return [v for _, v in read_all(config.kafka, config.topic(topic))]


@pytest.mark.slow
def test_two_thousand_files_to_done_then_a_replay_changes_nothing(config: Config) -> None:
    shipped = set(write_night(config, 2400, seed=2))
    cache = config.gantry.cache_root
    kept = {p for p in map(str, cache.rglob("*")) if "ScriptBackup" in p}
    keys = {f"ua-mac/{rel}" for rel in shipped}
    sources = {rel: sha256(cache / rel) for rel in shipped}
    pipeline = Pipeline(config)
    try:
        states = pipeline.run_until_done(keys)
    finally:
        pipeline.close()
    assert {k for k, v in states.items() if v["state"] == "DONE"} == keys
    assert not any((cache / rel).exists() for rel in shipped)
    transferred = events(config, "files.transferred")
    for v in transferred:
        assert sha256(config.transfer.destination_root / v["dest_path"]) == sources[v["path"]]
    assert {p for p in map(str, cache.rglob("*"))} >= kept
    assert not list(cache.glob("LemnaTec/MovingSensor/*/*"))  # emptied date dirs removed
    catalog = LocalCatalog(config.catalog.path)
    try:
        counts = catalog.counts()
    finally:
        catalog.close()
    metadata = sum(1 for rel in shipped if rel.endswith("_metadata.json"))
    assert counts["files"] == len(shipped) - metadata
    deletions = Counter(v["outcome"] for v in events(config, "files.deleted"))
    assert deletions == {"DELETED": len(shipped)}
    batches_before = len(events(config, "batches.submitted"))

    reset_groups(config)
    replayed = len(transferred)  # every stage reads its whole input again
    pipeline = Pipeline(config)
    try:
        with Stepping(pipeline.stages) as running:
            seen = running.handled
            assert running.wait(
                lambda: (
                    seen["Ingest"] >= replayed
                    and seen["Deleter"] >= replayed
                    and seen["Batcher"] >= len(shipped)
                ),
                timeout_s=300,
            )
    finally:
        pipeline.close()
    catalog = LocalCatalog(config.catalog.path)
    try:
        assert catalog.counts() == counts  # zero new catalog entries
    finally:
        catalog.close()
    deletions = Counter(v["outcome"] for v in events(config, "files.deleted"))
    assert deletions["DELETED"] == len(shipped)  # zero extra deletions
    assert len(events(config, "batches.submitted")) == batches_before  # zero new transfers


def test_a_reupload_after_deletion_is_a_new_version(config: Config) -> None:
    shipped = write_night(config, 30, seed=4)
    keys = {f"ua-mac/{rel}" for rel in shipped}
    pipeline = Pipeline(config)
    try:
        first = pipeline.run_until_done(keys)
        rel = sorted(shipped)[0]
        path = config.gantry.cache_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"second version")
        when = START.timestamp() + 86400
        os.utime(path, (when, when))
        from producers.gantry.night import xferlog_line

        with config.gantry.xferlog.open("ab") as log:
            log.write(xferlog_line(START, f"/gantry_data/{rel}", len(b"second version")))
        key = f"ua-mac/{rel}"
        run_until(
            pipeline.stages,
            lambda: (
                pipeline.states()[key]["version"] != first[key]["version"]
                and pipeline.states()[key]["state"] == "DONE"
            ),
            timeout_s=120,
        )
    finally:
        pipeline.close()
    final = pipeline.states()[key]
    assert final["previous_versions"] == [first[key]["version"]]
    dest = config.transfer.destination_root / next(
        v["dest_path"] for v in events(config, "files.transferred") if v["key"] == key
    )
    assert dest.read_bytes() == b"second version"


def test_status_and_report_from_the_compacted_topic(config: Config) -> None:
    from click.testing import CliRunner

    from terra_xfer.cli import cli
    from tests.kafka_read import env_for

    shipped = sorted(set(write_night(config, 40, seed=9)))
    with config.gantry.xferlog.open("ab") as log:
        log.write(b"this line is not xferlog\n")
    pipeline = Pipeline(config)
    try:
        pipeline.run_until_done({f"ua-mac/{rel}" for rel in shipped})
    finally:
        pipeline.close()
    env = env_for(config)
    runner = CliRunner()
    # Every file settled: none is listed but on asking for them all (or for DONE).
    unsettled = runner.invoke(cli, ["status", "--json"], env=env, catch_exceptions=False)
    assert unsettled.exit_code == 0 and json.loads(unsettled.output) == [], unsettled.output
    plain = runner.invoke(cli, ["status"], env=env, catch_exceptions=False).output.splitlines()
    assert plain == [
        f"DONE={len(shipped)}",
        "every file is settled (DONE or MISSING); --all lists them",
    ]
    listed = runner.invoke(cli, ["status", "--all", "--json"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert sorted(r["path"] for r in rows) == shipped
    assert {r["state"] for r in rows} == {"DONE"}
    assert all(r["version"] and r["updated_at"].endswith("Z") for r in rows)
    done = runner.invoke(cli, ["status", "--json", "--state", "done"], env=env)
    assert json.loads(done.output) == rows
    sensor = runner.invoke(cli, ["status", "--all", "--json", "--sensor", "stereoTop"], env=env)
    stereo = json.loads(sensor.output)
    assert {r["sensor"] for r in stereo} == {"stereoTop"}
    summary = runner.invoke(cli, ["status", "--sensor", "stereoTop"], env=env).output
    assert summary.splitlines()[0] == f"DONE={len(stereo)}  (sensor stereoTop)"
    nosuch = runner.invoke(cli, ["status", "--sensor", "nosuch"], env=env)
    assert nosuch.exit_code == 2
    assert "no file of sensor 'nosuch'; sensors with files: " in nosuch.output
    assert "stereoTop" in nosuch.output
    none_failed = runner.invoke(cli, ["status", "--json", "--state", "failed"], env=env)
    assert json.loads(none_failed.output) == []
    one = runner.invoke(cli, ["status", shipped[0]], env=env)
    assert one.exit_code == 0
    assert one.output.splitlines()[1].split()[:2] == ["state", "DONE"]
    steps = [line.split()[2] for line in one.output.splitlines()[2:]]
    # A batch's PREPARED and SUBMITTED records are both BATCHED; ingestion and deletion follow
    # the transfer in either order (two stages, two topics).
    assert steps[:4] == ["ARRIVED", "BATCHED", "BATCHED", "TRANSFERRED"]
    assert sorted(steps[4:]) == ["DELETED", "INGESTED"]
    config.status.index_path.unlink()  # a lost index is rebuilt from the topic
    again = runner.invoke(cli, ["status", "--all", "--json"], env=env)
    assert json.loads(again.output) == rows
    report = runner.invoke(cli, ["report", "--json"], env=env)
    doc = json.loads(report.output)
    assert sum(line["files_deleted"] for line in doc["files"]) == len(shipped)
    waiting = doc["waiting"]  # every file DONE: none waits for anything
    assert [(name, group["files"]) for name, group in waiting.items()] == [
        ("batch", 0),
        ("transfer", 0),
        ("ingest", 0),
        ("deletion", 0),
        ("missing", 0),
        ("quarantined", 0),
    ]
    assert waiting["ingest"]["reasons"] == []
    assert (
        doc["dead_letters"] == {"gantry:xferlog: line has": 1}
        or sum(doc["dead_letters"].values()) == 1
    )


def test_replay_runbook_reset_to_a_datetime(config: Config) -> None:
    """docs/replay.md: reset a stage's group to a date with Kafka's tool, run it again: no harm."""
    from datetime import UTC, datetime, timedelta

    shipped = set(write_night(config, 20, seed=14))
    before = datetime.now(UTC) - timedelta(minutes=5)
    pipeline = Pipeline(config)
    try:
        pipeline.run_until_done({f"ua-mac/{rel}" for rel in shipped})
    finally:
        pipeline.close()
    catalog = LocalCatalog(config.catalog.path)
    try:
        counts = catalog.counts()
    finally:
        catalog.close()
    stamp = before.strftime("%Y-%m-%dT%H:%M:%S.000")
    wait_group_empty(config.kafka, config.group("ingest"))
    done = run_tool(
        BrokerConfig().kafka_version,
        "consumer-groups",
        [
            "--bootstrap-server",
            config.kafka.bootstrap_servers,
            "--group",
            config.group("ingest"),
            "--topic",
            config.topic("files.transferred"),
            "--reset-offsets",
            "--to-datetime",
            stamp,
            "--execute",
        ],
    )
    assert done.returncode == 0, done.stderr
    assert config.topic("files.transferred") in done.stdout
    ingest = Ingest(config, registry.spec("ingest"), LocalCatalog(config.catalog.path))
    try:
        with Stepping([ingest], ["ingest"]) as running:
            assert running.wait(lambda: running.handled["ingest"] >= len(shipped), timeout_s=120)
    finally:
        ingest.close()
    catalog = LocalCatalog(config.catalog.path)
    try:
        assert catalog.counts() == counts
    finally:
        catalog.close()
    ingested = [v for v in events(config, "files.ingested") if v.get("created") is not None]
    assert sum(not v["created"] for v in ingested) >= len(shipped)  # the replay found them all
