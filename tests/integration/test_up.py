"""`terra-xfer up --threads` (every stage in one process), the sweeper, and a SIGTERM in the middle
of a night."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from consumers.catalog.local import LocalCatalog
from consumers.state.view import StateFollower
from producers.gantry.night import Upload, write_upload
from producers.sweeper import Sweeper
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import read_all, wait_for
from tests.pipeline import (
    START,
    exit_status,
    file_states,
    finished,
    gantry_config,
    sha256,
    up_process,
    write_night,
)

pytestmark = pytest.mark.broker


@pytest.fixture
def config(pipeline_config: Config) -> Config:
    cfg = gantry_config(pipeline_config)
    create_topics(cfg)
    return cfg


@pytest.mark.slow
def test_up_drains_a_night_and_resumes_after_sigterm(config: Config) -> None:
    shipped = set(write_night(config, 1000, seed=21))
    cache = config.gantry.cache_root
    digests = {rel: sha256(cache / rel) for rel in shipped}
    first = up_process(config, "--threads")
    try:
        wait_for(
            lambda: sum(s == "DONE" for s in file_states(config).values()) > 100,
            timeout_s=120,
            what="the first files DONE",
        )
        began = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert exit_status(first, 30) == 0
        assert time.monotonic() - began < 10  # the shutdown budget
    finally:
        stderr = finished(first)
    assert b"all stages stopped" in stderr
    # More of the night arrives while it is stopped: the restart must take it from the committed
    # position as well as finish what was in flight.
    later = set(write_night(config, 1500, seed=21, skip=1000))
    assert later and not later & shipped
    digests |= {rel: sha256(cache / rel) for rel in later}
    shipped |= later
    kept = {p for p in cache.rglob("*") if p.is_file() and "ScriptBackup" in str(p)}
    keys = {f"ua-mac/{rel}" for rel in shipped}
    second = up_process(config, "--threads", "--exit-when-idle", "4")
    try:
        assert exit_status(second, 240) == 0
    finally:
        finished(second)
    final = file_states(config)
    assert {k for k in keys if final.get(k) == "DONE"} == keys
    dest = config.transfer.destination_root
    for v in [
        v
        for name, v in read_all(config.kafka, config.topic("files.transferred"))
        if name == "FileTransferred"
    ]:
        assert sha256(dest / v["dest_path"]) == digests[v["path"]]
    assert not any((cache / rel).exists() for rel in shipped)
    assert {p for p in cache.rglob("*") if p.is_file()} == kept
    catalog = LocalCatalog(config.catalog.path)
    try:
        counts = catalog.counts()
    finally:
        catalog.close()
    metadata = sum(rel.endswith("_metadata.json") for rel in shipped)
    assert counts["files"] == len(shipped) - metadata  # nothing duplicated by the restart


def test_sweeper_requeues_only_old_unlogged_files(config: Config, tmp_path: Path) -> None:
    old = START.replace(year=2016)
    files = {
        "old": Upload("MAC/weather/2016-08-24/2016-08-24_01-00-00_weather.dat", 64, old, True),
        "old2": Upload(
            "LemnaTec/EnvironmentLogger/2016-08-24/2016-08-24_01-00-00_e.json", 64, old, True
        ),
        "hidden": Upload("MAC/weather/2016-08-24/.partial.dat", 64, old, True),
        "other": Upload("ScriptBackup/2016-08-24/old.tar", 64, old, False),
    }
    for up_ in files.values():
        write_upload(config.gantry.cache_root, up_)
    young_path = config.gantry.cache_root / "MAC/weather/2016-08-25/2016-08-25_01-00-00_w.dat"
    young_path.parent.mkdir(parents=True)
    young_path.write_bytes(b"just uploaded")  # mtime now: younger than min_age_s
    view = StateFollower(config, tmp_path / "sweeper-view.sqlite")
    sweeper = Sweeper(config, registry.spec("sweeper"), view)
    try:
        assert sweeper.step() == 2
        arrived = [v for _, v in read_all(config.kafka, config.topic("files.arrived"))]
        assert {v["path"] for v in arrived} == {files["old"].rel, files["old2"].rel}
        assert {v["source"] for v in arrived} == {"SWEEPER"}
        assert sweeper.step() == 0  # not due again before interval_s
        # The same files, now batched (in flight) per files.state, are not offered again.
        from consumers.batcher import Batcher
        from consumers.monitor import Monitor
        from consumers.state.keeper import StateKeeper
        from consumers.transfer.local import LocalTransfer
        from tests.pipeline import run_until

        backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
        stages = [
            Batcher(config, registry.spec("batcher"), backend),
            Monitor(config, registry.spec("monitor"), backend),
            StateKeeper(config, registry.spec("state-keeper")),
        ]
        try:
            run_until(stages, lambda: {s for s in file_states(config).values()} == {"TRANSFERRED"})
        finally:
            for s in stages:
                s.close()  # type: ignore[attr-defined]
            backend.close()
        sweeper.next_run = 0.0
        assert sweeper.step() == 0
        assert len(read_all(config.kafka, config.topic("files.arrived"))) == 2
    finally:
        sweeper.close()
        view.close()
