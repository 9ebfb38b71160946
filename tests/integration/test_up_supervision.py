"""`terra-xfer up` as its own supervisor: killed with SIGKILL, it leaves no stage behind and the
next `up` finishes the night unhindered; a stage killed inside it is started again; started
before the broker, it waits for it and then ships the night."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from consumers.catalog.local import LocalCatalog
from terra_xfer.broker import EmbeddedBroker, free_port
from terra_xfer.config import BrokerConfig, Config
from terra_xfer.stages import registry
from terra_xfer.stages.child import process_name
from terra_xfer.topics import create_topics
from tests.broker_tag import TEST_BROKER_TAG
from tests.kafka_read import wait_for
from tests.pipeline import (
    exit_status,
    file_states,
    finished,
    gantry_config,
    up_process,
    write_night,
)
from tests.supervision import Proc, children_of, log_lines_with, survivors

pytestmark = pytest.mark.broker
BROKER_TAG = TEST_BROKER_TAG  # as the session's: `make test` stops what is left of it
RESTARTED = b"starting it again"  # up's line for a stage it restarts


def night_config(config: Config) -> Config:
    """``config`` with small batches (a night completes over many of them) and no /metrics port
    (several `up`s, here and in other sessions, may run at once)."""
    cfg = gantry_config(config, max_files=20)
    return dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, port=0))


@pytest.fixture
def config(pipeline_config: Config) -> Config:
    cfg = night_config(pipeline_config)
    create_topics(cfg)
    return cfg


def done(config: Config, keys: set[str]) -> int:
    states = file_states(config)
    return sum(states.get(k) == "DONE" for k in keys)


def stage_processes(up: subprocess.Popen[bytes], config: Config) -> list[Proc]:
    """``up``'s stage processes, once there is one of each stage it runs."""
    wanted = sorted(process_name(s.name) for s in registry.running(config))

    def every_stage() -> list[Proc] | None:
        found = children_of(up.pid)
        return found if sorted(p.comm for p in found) == wanted else None

    found: list[Proc] = wait_for(every_stage, timeout_s=60, what="a process for every stage")
    return found


def keys_of(shipped: set[str]) -> set[str]:
    return {f"ua-mac/{rel}" for rel in shipped}


class Night:
    """A night written part by part: each part the next uploads of the same night."""

    def __init__(self, config: Config, seed: int) -> None:
        self.config, self.seed = config, seed
        self.written = 0
        self.shipped: set[str] = set()

    def write(self, uploads: int) -> None:
        part = write_night(self.config, self.written + uploads, self.seed, skip=self.written)
        assert part and not self.shipped & set(part)
        self.shipped |= set(part)
        self.written += uploads


def assert_unhindered(log: bytes) -> None:
    """No stage of this `up` was fenced by another process, none ended and was started again."""
    assert log_lines_with(log, b"fenced") == []
    assert log_lines_with(log, RESTARTED) == []


@pytest.mark.slow
def test_up_killed_twice_in_a_night_leaves_no_stage_behind_and_the_next_up_finishes(
    config: Config,
) -> None:
    night = Night(config, seed=41)
    night.write(300)
    logs: list[bytes] = []
    for kill in range(2):
        before = done(config, keys_of(night.shipped))
        up = up_process(config)
        try:
            children = stage_processes(up, config)
            wait_for(
                lambda: done(config, keys_of(night.shipped)) >= before + 20,  # noqa: B023
                timeout_s=180,
                what=f"files DONE by up {kill + 1}",
            )
            night.write(100)  # uploads still arriving: the night is not over
            assert children_of(up.pid) == children  # none of them ended (or was restarted)
            os.kill(up.pid, signal.SIGKILL)  # up itself, not its process group
            left = survivors(children, within_s=2.0)
            up.wait(30)
        finally:
            logs.append(finished(up))
        assert left == [], f"stages of the killed up still running 2 s after the kill: {left}"
        at_kill = done(config, keys_of(night.shipped))
        print(f"up {kill + 1} killed with {at_kill}/{len(night.shipped)} files DONE")
        assert at_kill < len(night.shipped)  # killed in the middle of the night
        night.write(100)  # more of the night arrives while no `up` runs
    shipped = night.shipped
    keys = keys_of(shipped)
    last = up_process(config)
    try:
        wait_for(lambda: done(config, keys) == len(keys), timeout_s=240, what="every file DONE")
        last.send_signal(signal.SIGTERM)
        assert exit_status(last, 30) == 0
    finally:
        logs.append(finished(last))
    for log in logs[1:]:  # each `up` after a kill
        assert_unhindered(log)
    assert not any((config.gantry.cache_root / rel).exists() for rel in shipped)
    catalog = LocalCatalog(config.catalog.path)
    try:
        counts = catalog.counts()
    finally:
        catalog.close()
    metadata = sum(rel.endswith("_metadata.json") for rel in shipped)
    assert counts["files"] == len(shipped) - metadata  # nothing registered twice


@pytest.mark.slow
def test_a_stage_process_killed_inside_up_is_started_again_and_the_night_completes(
    config: Config,
) -> None:
    night = Night(config, seed=43)
    night.write(300)
    victim = "state-keeper"
    up = up_process(config)
    try:
        children = stage_processes(up, config)
        wait_for(
            lambda: done(config, keys_of(night.shipped)) >= 20,
            timeout_s=180,
            what="the first files DONE",
        )
        night.write(100)  # work for the stage started again
        shipped, keys = night.shipped, keys_of(night.shipped)
        (killed,) = [p for p in children if p.comm == process_name(victim)]
        os.kill(killed.pid, signal.SIGKILL)
        assert done(config, keys) < len(keys)
        assert survivors([killed], within_s=30) == []
        again = stage_processes(up, config)  # a process of every stage again
        assert killed not in again
        assert set(children) - {killed} < set(again)  # the others ran on
        wait_for(lambda: done(config, keys) == len(keys), timeout_s=240, what="every file DONE")
        up.send_signal(signal.SIGTERM)
        assert exit_status(up, 30) == 0
    finally:
        log = finished(up)
    restarts = log_lines_with(log, RESTARTED)
    assert len(restarts) == 1 and f"stage {victim} was killed by SIGKILL" in restarts[0]
    assert not any((config.gantry.cache_root / rel).exists() for rel in shipped)


@pytest.mark.slow
def test_up_started_before_the_broker_waits_for_it_then_ships_the_night(
    pipeline_config: Config, tmp_path: Path
) -> None:
    port = free_port()
    base = night_config(pipeline_config)
    config = dataclasses.replace(
        base, kafka=dataclasses.replace(base.kafka, bootstrap_servers=f"127.0.0.1:{port}")
    )
    broker = EmbeddedBroker(
        port,
        tmp_path / "broker",
        BrokerConfig().kafka_version,
        heap="512m",
        controller_port=free_port(),
        tag=BROKER_TAG,
    )
    # The site's broker, with the pipeline's topics, is down when up starts (a power cut, say).
    broker.start(timeout_s=120)
    try:
        create_topics(config)
    finally:
        broker.stop()
    shipped = set(write_night(config, 200, seed=47))
    keys = keys_of(shipped)
    up = up_process(config)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            up.wait(40)  # past every client timeout (30 s at most): up waits, it does not give up
        began = time.monotonic()
        broker.start(timeout_s=120)
        wait_for(lambda: done(config, keys) == len(keys), timeout_s=300, what="every file DONE")
        shipped_s = time.monotonic() - began
        up.send_signal(signal.SIGTERM)
        assert exit_status(up, 30) == 0
    finally:
        log = finished(up)
        broker.stop()
    assert log_lines_with(log, b"Traceback") == []
    assert log_lines_with(log, RESTARTED) == []  # every stage waited; none failed
    assert not any((config.gantry.cache_root / rel).exists() for rel in shipped)
    print(f"shipped {len(keys)} files {shipped_s:.0f} s after the broker was started")
