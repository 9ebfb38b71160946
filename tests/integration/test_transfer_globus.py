"""Batcher + monitor through the globus backend (real globus-sdk) against the Transfer API double,
with every fault the double can inject."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from consumers.batcher import Batcher
from consumers.monitor import Monitor
from consumers.transfer.globus import GlobusTransfer
from producers.gantry.service import GantryProducer, log_source
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.doubles.globus_api import GlobusDouble
from tests.kafka_read import read_all
from tests.pipeline import gantry_config, run_until, sha256, write_night

pytestmark = pytest.mark.broker


@pytest.fixture
def double() -> Iterator[GlobusDouble]:
    with GlobusDouble() as d:
        yield d


def globus_config(config: Config, **monitor: Any) -> Config:
    """``config`` sending through the globus backend, with ``monitor`` settings."""
    config = dataclasses.replace(
        config,
        monitor=dataclasses.replace(config.monitor, **monitor),
        transfer=dataclasses.replace(
            config.transfer,
            backend="globus",
            globus=dataclasses.replace(config.transfer.globus, source_base="/"),
        ),
    )
    create_topics(config)
    return config


def globus_backend(config: Config, double: GlobusDouble) -> GlobusTransfer:
    """The globus backend on the double, from the gantry cache to the destination root."""
    src = double.add_endpoint(config.gantry.cache_root)
    dst = double.add_endpoint(config.transfer.destination_root)
    return GlobusTransfer(
        double.client_id,
        "terra-test-secret",
        src,
        dst,
        "/",
        transfer_base_url=double.url,
        auth_base_url=double.url,
        max_retries=2,
        max_retry_sleep_s=0.2,
    )


def test_a_healthy_run_submits_each_batch_once(
    pipeline_config: Config, double: GlobusDouble
) -> None:
    config = globus_config(gantry_config(pipeline_config, max_files=20))  # the default grace
    shipped = {f"ua-mac/{rel}" for rel in write_night(config, 300, seed=9)}
    backend = globus_backend(config, double)
    stages = [
        GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog")),
        Batcher(config, registry.spec("batcher"), backend),
        Monitor(config, registry.spec("monitor"), backend),
    ]

    def finished() -> bool:
        outcomes = read_all(config.kafka, config.topic("files.transferred"))
        return {v["key"] for name, v in outcomes if name == "FileTransferred"} == shipped

    try:
        run_until(stages, finished, timeout_s=180)
    finally:
        for s in stages:
            s.close()  # type: ignore[attr-defined]
        backend.close()
    batches = [v for _, v in read_all(config.kafka, config.topic("batches.submitted"))]
    prepared = [b["submission_id"] for b in batches if b["phase"] == "PREPARED"]
    submits = double.submits()
    per_batch = Counter(submission_id for submission_id, _ in submits)
    answers = Counter(code for _, code in submits)
    summary = f"{len(prepared)} batches, {len(submits)} submits, answers {dict(answers)}"
    assert len(prepared) >= 5, summary
    assert per_batch == Counter(prepared) and set(per_batch.values()) == {1}, summary
    assert answers == {"Accepted": len(prepared)}, summary


def test_every_fault_is_survived_with_one_final_outcome_per_file(
    pipeline_config: Config, double: GlobusDouble
) -> None:
    # A batch whose submit the faults defeated is submitted by the monitor a second later.
    config = globus_config(
        gantry_config(pipeline_config, max_files=60), max_attempts=3, submit_grace_s=1.0
    )
    shipped = sorted(set(write_night(config, 400, seed=6)))
    backend = globus_backend(config, double)
    doomed = shipped[5]
    double.fail_requests(429, 2, retry_after=1)
    double.fail_requests(503, 2)
    double.fail_next_task("ENDPOINT_ERROR", "the endpoint went away")
    double.pause_next_task(after_files=3)
    double.lose_next_submit_response(502)
    double.fail_paths(f"/{doomed}")
    resumed: set[str] = set()

    def finished() -> bool:
        for task_id in double.task_ids():  # an operator re-activates an INACTIVE task
            if double.task(task_id)["status"] == "INACTIVE" and task_id not in resumed:
                resumed.add(task_id)
                double.resume_task(task_id)
        outcomes = read_all(config.kafka, config.topic("files.transferred"))
        ok = {v["key"] for name, v in outcomes if name == "FileTransferred"}
        final = {v["key"] for name, v in outcomes if name == "FileTransferFailed" and v["final"]}
        return len(ok | final) == len(shipped)

    stages = [
        GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog")),
        Batcher(config, registry.spec("batcher"), backend),
        Monitor(config, registry.spec("monitor"), backend),
    ]
    try:
        run_until(stages, finished, timeout_s=240)
    finally:
        for s in stages:
            s.close()  # type: ignore[attr-defined]
        backend.close()

    outcomes = read_all(config.kafka, config.topic("files.transferred"))
    transferred = Counter(v["key"] for name, v in outcomes if name == "FileTransferred")
    assert set(transferred) == {f"ua-mac/{rel}" for rel in shipped if rel != doomed}
    failed = [
        v for name, v in outcomes if name == "FileTransferFailed" and v["key"].endswith(doomed)
    ]
    assert [f["attempt"] for f in failed] == [1, 2, 3] and failed[-1]["final"]
    assert "PERMISSION_DENIED" in failed[-1]["reason"]
    for rel in shipped:
        if rel != doomed:
            copy = config.transfer.destination_root / next(
                v["dest_path"] for n, v in outcomes if n == "FileTransferred" and v["path"] == rel
            )
            assert sha256(copy) == sha256(config.gantry.cache_root / rel)
    assert resumed, "no task went INACTIVE"
    batches = [v for _, v in read_all(config.kafka, config.topic("batches.submitted"))]
    prepared = {b["batch_id"]: b["submission_id"] for b in batches if b["phase"] == "PREPARED"}
    tasks = [double.task(t) for t in double.task_ids()]
    # One task per batch: the lost submit response was retried under the same submission id.
    assert len(tasks) == len(prepared)
    assert any(t["status"] == "FAILED" for t in tasks)
