"""`terra-xfer up --processes`: every stage in a process of its own, as a user runs it."""

from __future__ import annotations

import signal
import time

import pytest

from consumers.catalog.local import LocalCatalog
from terra_xfer.config import Config
from terra_xfer.topics import create_topics
from tests.kafka_read import wait_for
from tests.pipeline import file_states, gantry_config, up_process, write_night

pytestmark = pytest.mark.broker


@pytest.fixture
def config(pipeline_config: Config) -> Config:
    cfg = gantry_config(pipeline_config)
    create_topics(cfg)
    return cfg


def test_stage_processes_drain_a_night_stop_on_sigterm_and_resume(config: Config) -> None:
    shipped = set(write_night(config, 600, seed=23))
    keys = {f"ua-mac/{rel}" for rel in shipped}
    first = up_process(config, "--processes")
    try:
        wait_for(
            lambda: sum(s == "DONE" for s in file_states(config).values()) > 50,
            timeout_s=180,
            what="the first files DONE",
        )
        began = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        assert time.monotonic() - began < 12  # the shutdown budget, and the children's exit
    finally:
        if first.poll() is None:
            first.kill()
        stderr = first.stderr.read() if first.stderr else b""
        if first.stderr:
            first.stderr.close()
    assert b"all stages stopped" in stderr
    second = up_process(config, "--processes", "--exit-when-idle", "4")
    try:
        assert second.wait(240) == 0
    finally:
        if second.poll() is None:
            second.kill()
        if second.stderr:
            second.stderr.close()
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
