"""A state keeper replica added mid-night, with a new (empty) copy, seeds it from a running peer's
and folds its share of the files onto what the peer's copy held: two ``terra-xfer state-keeper``
processes, each with its own instance id, copy and metrics port, on a real broker.

A copy seeded wrong (rows missing behind advanced offsets) would fold a transfer onto no state,
and the file's history would start at TRANSFERRED instead of ARRIVED.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka.admin import AdminClient

from schemas.codec import Codec
from terra_xfer.broker import free_port
from terra_xfer.config import Config
from terra_xfer.kafka import TxProducer, client_config
from terra_xfer.topics import FILES_ARRIVED, FILES_STATE, FILES_TRANSFERRED, create_topics
from tests.kafka_read import env_for, read_all, wait_for
from tests.samples import sample

pytestmark = pytest.mark.broker
CODEC = Codec()
FILES = 300


class Keeper:
    """One replica: its process, log and metrics port."""

    def __init__(self, config: Config, home: Path, name: str, seed_from: str = "") -> None:
        self.port = free_port()
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        env = {
            **os.environ,
            **env_for(config),
            "TERRA_XFER_INSTANCE_ID": name,
            "TERRA_XFER_STATUS_KEEPER_PATH": str(home / name / "keeper.sqlite"),
            "TERRA_XFER_METRICS_PORT": str(self.port),
            "TERRA_XFER_STATUS_SEED_FROM": seed_from,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "terra_xfer", "--log-json", "state-keeper"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logged(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()


@pytest.fixture
def keepers() -> Iterator[list[Keeper]]:
    started: list[Keeper] = []
    try:
        yield started
    finally:
        for keeper in started:
            keeper.stop()


def _send(config: Config, topic: str, record: str, keys: list[str]) -> None:
    producer = TxProducer(config.kafka, f"{config.topic(topic)}-{record}")
    producer.init()
    try:
        with producer.transaction():
            for key in keys:
                value = sample(record) | {"key": key}
                if "path" in value:
                    value["path"] = key
                producer.produce(config.topic(topic), CODEC.encode(record, value), key)
    finally:
        producer.close()


def _histories(config: Config) -> dict[str, list[str]]:
    """Each file's latest state's history, as the state names it went through."""
    latest = {v["key"]: v for _, v in read_all(config.kafka, config.topic(FILES_STATE))}
    return {key: [t["state"] for t in v["history"]] for key, v in latest.items()}


def _holders(config: Config) -> dict[str, int]:
    """Partitions of the keeper's group held by each member, by instance id."""
    admin = AdminClient(client_config(config.kafka))
    group = config.group("state-keeper")
    found = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    return {
        str(m.group_instance_id): len({tp.partition for tp in m.assignment.topic_partitions})
        for m in found.members
    }


def test_a_keeper_added_mid_night_seeds_its_copy_and_folds_onto_it(
    pipeline_config: Config, tmp_path: Path, keepers: list[Keeper]
) -> None:
    config = pipeline_config
    create_topics(config)
    keys = [f"ua-mac/Level_0/seeding/{i:04d}.bin" for i in range(FILES)]
    keepers.append(Keeper(config, tmp_path, "keeper-a"))
    _send(config, FILES_ARRIVED, "FileArrived", keys)
    wait_for(
        lambda: len(_histories(config)) == FILES, timeout_s=120, what="every arrival folded by a"
    )
    # The second replica starts empty, beside a peer whose copy holds every file.
    keepers.append(Keeper(config, tmp_path, "keeper-b", seed_from=keepers[0].url))
    wait_for(
        lambda: ": seeded from " in keepers[1].logged(), timeout_s=120, what="b seeded its copy"
    )
    wait_for(
        lambda: sorted(_holders(config).values()) == [1, 2],
        timeout_s=120,
        what="the partitions shared by a and b",
    )
    _send(config, FILES_TRANSFERRED, "FileTransferred", keys)
    wait_for(
        lambda: all(h[-1:] == ["TRANSFERRED"] for h in _histories(config).values()),
        timeout_s=120,
        what="every transfer folded",
    )
    histories = _histories(config)
    assert len(histories) == FILES
    assert all(h == ["ARRIVED", "TRANSFERRED"] for h in histories.values()), {
        k: h for k, h in histories.items() if h != ["ARRIVED", "TRANSFERRED"]
    }
    assert keepers[0].url in keepers[1].logged()  # seeded from a, not rebuilt
    assert all(k.proc.poll() is None for k in keepers)
