"""`terra-xfer up`: every stage in a process of its own (the default), as a user runs it: each a
child of ``up`` named after its stage, stopped together by SIGTERM, their metrics served as one."""

from __future__ import annotations

import dataclasses
import signal
import stat
import time
from collections import Counter
from pathlib import Path

import pytest

from consumers.catalog.local import LocalCatalog
from terra_xfer.broker import free_port
from terra_xfer.config import Config
from terra_xfer.sites.cache import path_rules
from terra_xfer.sites.gantry import CachePath, cache_path
from terra_xfer.stages import registry
from terra_xfer.stages.child import process_name
from terra_xfer.topics import create_topics
from tests.integration.test_metrics_scrape import FILE_STAGES, files, scrape
from tests.kafka_read import wait_for
from tests.pipeline import (
    exit_status,
    file_states,
    finished,
    gantry_config,
    up_process,
    write_night,
)
from tests.supervision import children_of, survivors

pytestmark = pytest.mark.broker


@pytest.fixture
def config(pipeline_config: Config) -> Config:
    cfg = gantry_config(pipeline_config)
    create_topics(cfg)
    return cfg


@pytest.mark.slow
def test_stage_processes_drain_a_night_stop_on_sigterm_and_resume(config: Config) -> None:
    shipped = set(write_night(config, 600, seed=23))
    keys = {f"ua-mac/{rel}" for rel in shipped}
    first = up_process(config)  # the default: one process per stage
    try:
        wait_for(
            lambda: sum(s == "DONE" for s in file_states(config).values()) > 50,
            timeout_s=180,
            what="the first files DONE",
        )
        children = children_of(first.pid)
        assert sorted(child.comm for child in children) == sorted(
            process_name(spec.name) for spec in registry.running(config)
        )
        began = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert exit_status(first, 30) == 0
        assert time.monotonic() - began < 12  # the shutdown budget, and the children's exit
        assert survivors(children, within_s=0) == []  # every stage ended before up did
    finally:
        stderr = finished(first)
    assert b"all stages stopped" in stderr
    assert b"starting it again" not in stderr  # no stage ended on its own
    second = up_process(config, "--exit-when-idle", "4")
    try:
        assert exit_status(second, 240) == 0
    finally:
        finished(second)
    final = file_states(config)
    assert {k for k in keys if final.get(k) == "DONE"} == keys
    assert not any((config.gantry.cache_root / rel).exists() for rel in shipped)
    catalog = LocalCatalog(config.catalog.path)
    try:
        counts = catalog.counts()
    finally:
        catalog.close()
    metadata = sum(rel.endswith("_metadata.json") for rel in shipped)
    assert counts["files"] == len(shipped) - metadata  # nothing duplicated by the restart


def test_stage_processes_metrics_are_served_on_one_port_and_their_files_removed(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = write_night(config, 60, seed=29)
    keys = {f"ua-mac/{rel}" for rel in shipped}
    rules = path_rules(config)
    per_sensor = Counter(
        w.sensor for rel in shipped if isinstance(w := cache_path(rel, rules), CachePath)
    )
    port = free_port()
    cfg = dataclasses.replace(
        config,
        metrics=dataclasses.replace(config.metrics, port=port),
        sweeper=dataclasses.replace(config.sweeper, min_age_s=1e9),  # no file offered twice
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # where up makes its metrics directory
    proc = up_process(cfg, "--processes")  # the default, named
    try:
        shared = wait_for(lambda: list(tmp.glob("terra-xfer-metrics-*")), 60, what="metrics dir")
        assert len(shared) == 1 and stat.S_IMODE(shared[0].stat().st_mode) == 0o700
        wait_for(
            lambda: {k for k, v in file_states(cfg).items() if v == "DONE"} >= keys,
            timeout_s=240,
            what="every file DONE",
        )

        def counted() -> bool:
            now = scrape(port)
            return all(
                files(now, stage, sensor) >= n
                for stage in FILE_STAGES
                for sensor, n in per_sensor.items()
            )

        wait_for(counted, timeout_s=60, what="every stage's files counted")
        after = scrape(port)
        proc.send_signal(signal.SIGTERM)
        assert exit_status(proc, 30) == 0
    finally:
        finished(proc)
    # arrived: the gantry process; transferred: the monitor's; ingested, deleted: their own
    for stage in FILE_STAGES:
        for sensor, n in per_sensor.items():
            assert files(after, stage, sensor) == n, (stage, sensor)
    tailer = frozenset({("source", "xferlog")})
    assert after[("terra_xfer_tailer_position_bytes", tailer)] == cfg.gantry.xferlog.stat().st_size
    assert after[("terra_xfer_tailer_bytes_behind", tailer)] == 0
    assert after[("terra_xfer_batch_files_count", frozenset())] > 0  # the batcher's
    assert all("pid" not in dict(labels) for _, labels in after)  # one series each, as in threads
    assert not list(tmp.glob("terra-xfer-metrics-*"))  # removed at exit, with the children's files
