"""The Danforth producer on a real PostgreSQL and a real broker: each snapshot's events exactly
once, metadata with every file, bad blobs dead-lettered, late completions, kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.checkpoints import last_checkpoint
from producers.danforth.service import LAST_SNAPSHOT, DanforthProducer
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import env_for, read_all
from tests.lemnatec import LemnaTecSite, Planned, danforth_config, new_site
from tests.pipeline import drain
from tests.postgres import PostgresServer

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


@pytest.fixture
def config(
    pipeline_config: Config,
    postgres: PostgresServer,
    tmp_path: Path,
    unique: Callable[[str], str],
) -> Config:
    cfg = danforth_config(pipeline_config, postgres, unique("lt").replace("-", "_"), tmp_path)
    create_topics(cfg)
    return cfg


@pytest.fixture
def site(config: Config, postgres: PostgresServer) -> Iterator[LemnaTecSite]:
    made = new_site(postgres, config)
    try:
        yield made
    finally:
        made.close()


def arrived(config: Config) -> list[dict[str, Any]]:
    return [v for _, v in read_all(config.kafka, config.topic("files.arrived"))]


def dead_letters(config: Config) -> list[dict[str, Any]]:
    return [v for _, v in read_all(config.kafka, config.topic("deadletter"))]


def expected_keys(planned: list[Planned]) -> Counter[str]:
    return Counter(f"danforth/{path}" for p in planned for path in p.files())


def cache_files(config: Config) -> set[str]:
    root = config.danforth.cache_root
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_snapshots_flow_metadata_with_every_file_and_bad_blobs_dead_lettered(
    config: Config, site: LemnaTecSite
) -> None:
    spoil = {(1, 2): "missing", (2, 5): "truncated", (6, 0): "not_zip"}
    planned = site.add(12, watering_every=4, spoil=spoil)
    producer = DanforthProducer(config, registry.spec("danforth"))
    try:
        drain(producer)
    finally:
        producer.close()
    events = arrived(config)
    assert Counter(v["key"] for v in events) == expected_keys(planned)
    assert cache_files(config) == {path for p in planned for path in p.files()}
    by_snapshot: dict[str, list[dict[str, Any]]] = {}
    for v in events:
        by_snapshot.setdefault(v["path"].split("/")[0], []).append(v)
    for p in planned:
        values = by_snapshot[f"snapshot{p.id}"]
        meta_file = config.danforth.cache_root / p.files()[0]
        on_disk = json.loads(meta_file.read_text())
        assert {json.loads(v["dataset_metadata"]) == on_disk for v in values} == {True}
        assert on_disk["complete"] is not bool(p.spoiled)
        assert on_disk["watering_job"] is p.watering
        assert sorted(m["file"] for m in on_disk["missing_images"]) == sorted(p.spoiled)
        images = [v for v in values if v["path"].endswith(".png")]
        assert all(json.loads(v["file_metadata"])["snapshot_id"] == p.id for v in images)
        assert {v["source"] for v in values} == {"DANFORTH"}
    letters = {d["key"]: d for d in dead_letters(config)}
    wanted = {
        f"danforth/snapshot{p.id}/{n}": words for p in planned for n, words in p.spoiled.items()
    }
    assert set(letters) == set(wanted)
    for key, words in wanted.items():
        assert words in letters[key]["reason"] and letters[key]["source"] == "danforth"
    stored = last_checkpoint(config, f"danforth:{site.database}")
    assert stored is not None and stored["position"]["last_id"] == planned[-1].id
    assert stored["events"] == sum(expected_keys(planned).values())


def test_the_producer_exports_its_position_from_its_start_and_no_other_stage_does(
    config: Config, site: LemnaTecSite
) -> None:
    """terra_xfer_danforth_last_snapshot_id is labelled by database and set when the producer
    starts (before anything new is committed): absent, its alert says the producer is gone."""
    planned = site.add(2)
    gauge = ("terra_xfer_danforth_last_snapshot_id", {"database": site.database})
    first = DanforthProducer(config, registry.spec("danforth"))
    try:
        drain(first)
    finally:
        first.close()
    assert metrics.REGISTRY.get_sample_value(*gauge) == planned[-1].id
    LAST_SNAPSHOT.remove(site.database)  # as in a new process
    second = DanforthProducer(config, registry.spec("danforth"))
    try:
        second.start()
        assert metrics.REGISTRY.get_sample_value(*gauge) == planned[-1].id
    finally:
        second.close()


def test_a_snapshot_completed_late_is_shipped_when_it_completes(
    config: Config, site: LemnaTecSite
) -> None:
    early = site.add(3, completed=False)
    done = site.add(2)
    producer = DanforthProducer(config, registry.spec("danforth"))
    try:
        drain(producer)
        assert Counter(v["key"] for v in arrived(config)) == expected_keys(done)
        site.complete(p.id for p in early)
        producer.next_poll = 0.0
        drain(producer)
    finally:
        producer.close()
    assert Counter(v["key"] for v in arrived(config)) == expected_keys(early + done)
    stored = last_checkpoint(config, f"danforth:{site.database}")
    assert stored is not None and stored["position"] == {"last_id": done[-1].id, "waiting": {}}


def made_ahead(config: Config) -> set[str]:
    """Snapshot directories holding images (whole or under their temporary names) whose events
    are not committed: the pool was making them when the producer died."""
    committed = {v["path"].split("/")[0] for v in arrived(config)}
    images = config.danforth.cache_root.glob("snapshot*/*.png*")
    return {p.parent.name for p in images} - committed


@pytest.mark.slow
def test_kill_9_mid_snapshot_loses_and_repeats_nothing(
    config: Config, site: LemnaTecSite, postgres: PostgresServer
) -> None:
    """Each incarnation is killed soon after one of its commits, while three pool threads make
    the images of the plan behind it: frames a quarter of the VIS camera's and the NIR camera's
    own size, so a few images of one plan are being made at once."""
    cameras = ("VIS=1227x1028", "NIR=636x508", "PSII=694x519")
    spoil = {(7, 3): "truncated", (20, 0): "missing"}
    planned = site.add(24, cameras, spoil=spoil, repeat_frames=True)
    env = {
        **os.environ,
        **env_for(config),
        "TERRA_XFER_DANFORTH_CAMERAS": ",".join(cameras),
        "TERRA_XFER_DANFORTH_CHUNK_SNAPSHOTS": "2",
        "TERRA_XFER_DANFORTH_WORKERS": "3",
        "TERRA_XFER_DANFORTH_PASSWORD": postgres.password,
    }
    cmd = [sys.executable, "-m", "terra_xfer", "--log-json", "danforth"]
    rng = random.Random(8)
    mid_stream: list[bool] = []
    ahead: list[set[str]] = []
    for _ in range(4):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert proc.stderr is not None
            for raw in proc.stderr:  # the producer says when it has committed a plan
                if b"shipped snapshots" in raw:
                    break
            time.sleep(rng.uniform(0.0, 0.3))  # the random moment of the kill, not a wait
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()  # type: ignore[union-attr]
        mid_stream.append(0 < len(arrived(config)) < sum(expected_keys(planned).values()))
        ahead.append(made_ahead(config))
    assert any(mid_stream), "no kill landed after a commit while the producer had work left"
    assert any(ahead), "no kill landed while the pool was making images of uncommitted snapshots"
    final = subprocess.run(
        [*cmd, "--idle-exit", "3"], env=env, capture_output=True, timeout=600, check=False
    )
    assert final.returncode == 0, final.stderr[-2000:]
    assert Counter(v["key"] for v in arrived(config)) == expected_keys(planned)
    letters = Counter(d["key"] for d in dead_letters(config))
    assert letters == Counter(
        f"danforth/snapshot{p.id}/{name}" for p in planned for name in p.spoiled
    )
    assert cache_files(config) == {path for p in planned for path in p.files()}
