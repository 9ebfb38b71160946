"""How often the monitor polls a task: at the backend's fixed interval when it names one (a local
read), with exponential backoff otherwise (a rate-limited service). Driven by a fake clock."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence

import pytest
from confluent_kafka import Producer

from consumers.monitor import Monitor
from consumers.transfer.base import FileOutcome, TaskState, TaskStatus, TransferItem
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.kafka import PARTITIONER
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.samples import sample

pytestmark = pytest.mark.broker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NeverDone:
    """A backend whose one task stays ACTIVE; it notes the (fake) time of every poll."""

    name = "double"
    raw_names = True

    def __init__(self, clock: Clock, status_poll_s: float | None) -> None:
        self.clock = clock
        self.status_poll_s = status_poll_s
        self.polls: list[float] = []

    def new_submission_id(self, batch_id: str) -> str:
        return f"sub-{batch_id}"

    def submit(
        self, batch_id: str, submission_id: str, items: Sequence[TransferItem], label: str
    ) -> str:
        return "task-1"

    def task(self, task_id: str) -> TaskState:
        self.polls.append(self.clock())
        return TaskState(task_id, TaskStatus.ACTIVE, "OK", 1, 0, 0, 0, None, False)

    def outcomes(self, task_id: str, items: Sequence[TransferItem]) -> list[FileOutcome]:
        raise AssertionError("the task never finishes")

    def confirm(
        self, item: TransferItem, checksum: str | None = None, algorithm: str | None = None
    ) -> FileOutcome:
        raise AssertionError("nothing to confirm")

    def close(self) -> None:
        pass


# A tick of 1/16 s: every sum of ticks and backoffs is exact in binary floating point.
TICK = 0.0625


def polls_over(config: Config, status_poll_s: float | None, ticks: int) -> list[float]:
    """Advance the clock by one TICK ``ticks`` times after the first poll; the poll times."""
    config = dataclasses.replace(
        config,
        # No batcher records the batch as submitted: the monitor submits it at once.
        monitor=dataclasses.replace(
            config.monitor, poll_initial_s=TICK, poll_max_s=60.0, submit_grace_s=0.0
        ),
    )
    create_topics(config)
    record = sample("BatchSubmitted") | {"phase": "PREPARED", "task_id": None}
    producer = Producer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "partitioner": PARTITIONER}
    )
    producer.produce(
        config.topic("batches.submitted"),
        Codec().encode("BatchSubmitted", record),
        key=record["batch_id"],
    )
    producer.flush(10)
    clock = Clock()
    backend = NeverDone(clock, status_poll_s)
    monitor = Monitor(config, registry.spec("monitor"), backend, clock)
    try:
        deadline = time.monotonic() + 60
        while not backend.polls:
            assert time.monotonic() < deadline, "the monitor never took the batch"
            monitor.step()
        for _ in range(ticks):
            clock.now += TICK
            monitor.step()
    finally:
        monitor.close()
    return backend.polls


def test_a_backend_with_a_fixed_interval_is_polled_at_every_interval(
    pipeline_config: Config,
) -> None:
    polls = polls_over(pipeline_config, TICK, ticks=16)
    assert len(polls) == 17
    assert all(later > earlier for earlier, later in itertools.pairwise(polls))


def test_a_remote_backend_is_polled_with_backoff(pipeline_config: Config) -> None:
    polls = polls_over(pipeline_config, None, ticks=16)
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    assert gaps == [TICK, 2 * TICK, 4 * TICK, 8 * TICK]
