"""kill -9 of the batcher and the monitor at random moments: no file lost, no batch run twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from producers.gantry.service import GantryProducer, log_source
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import env_for, read_all, wait_for
from tests.pipeline import drain, gantry_config, write_night

pytestmark = pytest.mark.broker


def test_random_kills_of_batcher_and_monitor(pipeline_config: Config) -> None:
    config = gantry_config(pipeline_config, max_files=100)
    create_topics(config)
    shipped = set(write_night(config, 3000, seed=8))
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        drain(producer)
    finally:
        producer.close()
    env = {
        **os.environ,
        **env_for(config),
        "TERRA_XFER_MONITOR_POLL_INITIAL_S": "0.05",
        "TERRA_XFER_MONITOR_POLL_MAX_S": "0.5",
        "TERRA_XFER_MONITOR_SUBMIT_GRACE_S": "2",  # a batcher killed before submitting
    }
    base = [sys.executable, "-m", "terra_xfer", "--log-json"]
    rng = random.Random(13)

    def transferred() -> set[str]:
        return {
            v["key"]
            for name, v in read_all(config.kafka, config.topic("files.transferred"))
            if name == "FileTransferred"
        }

    def start(stage: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*base, stage], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    procs = {"batcher": start("batcher"), "monitor": start("monitor")}
    kills = 0
    try:
        while kills < 6 and len(transferred()) < len(shipped):
            time.sleep(rng.uniform(0.5, 2.5))  # the random moment of the next kill, not a wait
            victim = rng.choice(sorted(procs))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            procs[victim] = start(victim)
            kills += 1
        wait_for(
            lambda: len(transferred()) >= len(shipped),
            timeout_s=240,
            interval_s=1.0,
            what="every file transferred",
        )
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(30)
    assert kills >= 3
    assert transferred() == {f"ua-mac/{rel}" for rel in shipped}
    batches = [v for _, v in read_all(config.kafka, config.topic("batches.submitted"))]
    prepared = Counter(b["batch_id"] for b in batches if b["phase"] == "PREPARED")
    assert max(prepared.values()) == 1
    tasks = list((config.transfer.state_dir / "tasks").glob("*.json"))
    assert len(tasks) == len(prepared)  # no second task for any batch
    in_batches = Counter(f["key"] for b in batches if b["phase"] == "PREPARED" for f in b["files"])
    assert set(in_batches) == {f"ua-mac/{rel}" for rel in shipped}
