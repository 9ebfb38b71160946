"""Batcher + monitor (+ state keeper) on the real broker with the local transfer backend."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consumers.batcher import Batcher
from consumers.monitor import Monitor
from consumers.state.keeper import StateKeeper
from consumers.transfer.local import LocalTransfer
from producers.gantry.service import GantryProducer, log_source
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import read_all
from tests.pipeline import drain, gantry_config, run_until, sha256, write_night

pytestmark = pytest.mark.broker


@pytest.fixture
def config(pipeline_config: Config) -> Config:
    cfg = gantry_config(pipeline_config, max_files=500)
    create_topics(cfg)
    return cfg


def transferred(config: Config) -> list[tuple[str, dict]]:
    return read_all(config.kafka, config.topic("files.transferred"))


def recorded_transferred(config: Config) -> int:
    """Records of files.state in TRANSFERRED so far."""
    states = read_all(config.kafka, config.topic("files.state"))
    return sum(1 for _, v in states if v["state"] == "TRANSFERRED")


def short_grace(config: Config) -> Config:
    """``config`` with a monitor that submits a batch the batcher did not after a second."""
    return dataclasses.replace(
        config, monitor=dataclasses.replace(config.monitor, submit_grace_s=1.0)
    )


def test_two_thousand_files_each_get_one_outcome_and_identical_bytes(config: Config) -> None:
    shipped = write_night(config, 2300)
    backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
    stages = [
        GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog")),
        Batcher(config, registry.spec("batcher"), backend),
        Monitor(config, registry.spec("monitor"), backend),
        StateKeeper(config, registry.spec("state-keeper")),
    ]
    try:
        run_until(
            stages,
            lambda: (
                len(transferred(config)) >= len(set(shipped))
                and recorded_transferred(config) >= len(set(shipped))
            ),  # the keeper has folded them
            timeout_s=180,
        )
    finally:
        for s in stages:
            s.close()  # type: ignore[attr-defined]
        backend.close()
    outcomes = transferred(config)
    assert {name for name, _ in outcomes} == {"FileTransferred"}
    per_key = Counter(v["key"] for _, v in outcomes)
    assert set(per_key) == {f"ua-mac/{rel}" for rel in shipped} and max(per_key.values()) == 1
    for _, v in outcomes:
        dest = config.transfer.destination_root / v["dest_path"]
        assert sha256(dest) == sha256(config.gantry.cache_root / v["path"]) == v["checksum"]
    batches = [v for _, v in read_all(config.kafka, config.topic("batches.submitted"))]
    prepared = [b for b in batches if b["phase"] == "PREPARED"]
    assert all(len(b["files"]) <= 500 for b in prepared)
    assert any(len(b["files"]) == 500 for b in prepared)  # full windows close at max_files
    assert any(len(b["files"]) < 500 for b in prepared)  # partial windows flush after max_wait_s
    assert len({b["batch_id"] for b in prepared}) == len(prepared)
    submitted = {b["batch_id"]: b["task_id"] for b in batches if b["phase"] == "SUBMITTED"}
    assert set(submitted) == {b["batch_id"] for b in prepared}
    final = {v["key"]: v for _, v in read_all(config.kafka, config.topic("files.state"))}
    assert {k for k, v in final.items() if v["state"] == "TRANSFERRED"} == set(per_key)


def test_a_prepared_batch_whose_submit_was_lost_is_submitted_by_the_monitor(
    config: Config, tmp_path: Path
) -> None:
    config = short_grace(config)
    shipped = write_night(config, 40)

    submits: list[str] = []

    class Counted(LocalTransfer):
        def submit(self, batch_id: str, *args: Any, **kwargs: Any) -> str:
            submits.append(batch_id)
            return super().submit(batch_id, *args, **kwargs)

    backend = Counted(config.transfer.destination_root, config.transfer.state_dir)

    class LostSubmit(LocalTransfer):
        def submit(self, *args: object, **kwargs: object) -> str:  # dies before submitting
            raise SystemExit("batcher killed between recording and submitting")

    lost = LostSubmit(config.transfer.destination_root, config.transfer.state_dir)
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    batcher = Batcher(config, registry.spec("batcher"), lost)
    try:
        drain(producer)
        with pytest.raises(SystemExit):
            run_until([batcher], lambda: False, timeout_s=60)
    finally:
        batcher.close()
        producer.close()
        lost.close()
    monitor = Monitor(config, registry.spec("monitor"), backend)
    batcher = Batcher(config, registry.spec("batcher"), backend)
    try:
        run_until([batcher, monitor], lambda: len(transferred(config)) >= len(set(shipped)))
    finally:
        monitor.close()
        batcher.close()
        backend.close()
    tasks = list((config.transfer.state_dir).glob("**/*.json"))
    batches = [v for _, v in read_all(config.kafka, config.topic("batches.submitted"))]
    prepared_ids = [b["batch_id"] for b in batches if b["phase"] == "PREPARED"]
    assert len(prepared_ids) == len(set(prepared_ids))
    assert len(tasks) == len(prepared_ids)  # one task per batch
    assert sorted(submits) == sorted(prepared_ids)  # by the monitor, once each
    assert Counter(v["key"] for _, v in transferred(config)) == Counter(
        f"ua-mac/{r}" for r in set(shipped)
    )


def test_a_refused_batch_fails_its_files_and_they_go_again(config: Config) -> None:
    from consumers.transfer.base import TransferPermanentError

    config = short_grace(config)
    shipped = set(write_night(config, 30, seed=41))

    class RefusesOnce(LocalTransfer):
        victim: str | None = None
        refused = 0

        def submit(self, batch_id: str, *args: Any, **kwargs: Any) -> str:
            RefusesOnce.victim = RefusesOnce.victim or batch_id
            if batch_id == RefusesOnce.victim and RefusesOnce.refused < 2:
                RefusesOnce.refused += 1  # the batcher's submit, then the monitor's
                raise TransferPermanentError("403 endpoint permission denied")
            return super().submit(batch_id, *args, **kwargs)

    backend = RefusesOnce(config.transfer.destination_root, config.transfer.state_dir)
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    stages = [
        producer,
        Batcher(config, registry.spec("batcher"), backend),
        Monitor(config, registry.spec("monitor"), backend),
    ]
    try:
        run_until(
            stages,
            lambda: (
                {v["key"] for n, v in transferred(config) if n == "FileTransferred"}
                == {f"ua-mac/{r}" for r in shipped}
            ),
        )
    finally:
        for s in stages:
            s.close()  # type: ignore[attr-defined]
        backend.close()
    failed = [v for n, v in transferred(config) if n == "FileTransferFailed"]
    assert failed and all("403" in f["reason"] and not f["final"] for f in failed)
    assert {f["attempt"] for f in failed} == {1}
