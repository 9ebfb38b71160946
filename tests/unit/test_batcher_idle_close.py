"""Idle transfers close windows early: while fewer than ``idle_tasks`` of the batcher's tasks run
and a read drained what was there, open windows close at once instead of waiting to fill or age
(Nagle's rule for batches); while that many run, windows keep growing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from consumers.batch_windows import Window
from consumers.batcher import IDLE_RECHECK_S, READ_MAX, Batcher
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.stages import registry
from tests.fakes import Clock, offline
from tests.samples import sample
from tests.unit.test_batcher_window_clock import Backend, IdleProducer, Msg, TrickleConsumer


class Task:
    def __init__(self, final: bool) -> None:
        self.is_final = final


class Tasks(Backend):
    """A backend whose tasks end when the test says; it counts how often each one is asked."""

    def __init__(self) -> None:
        self.final: set[str] = set()
        self.asked: list[str] = []

    def task(self, task_id: str) -> Task:
        self.asked.append(task_id)
        return Task(task_id in self.final)


def batcher_with(
    idle_tasks: int, messages: int, pending: tuple[str, ...] = ()
) -> tuple[Batcher, Tasks, Clock, list[Window]]:
    batching = dataclasses.replace(Config().batcher, idle_tasks=idle_tasks, max_files=10_000)
    config = offline(batcher=batching)
    clock = Clock(100.0)
    backend = Tasks()
    batcher = Batcher(config, registry.spec("batcher"), backend=backend, clock=clock)  # type: ignore[arg-type]
    batcher.consumer.close()
    batcher.kafka.producer.close()
    topic = config.topic("files.arrived")
    codec = Codec()
    queued = [
        Msg(
            topic, 2, n, codec.encode("FileArrived", sample("FileArrived") | {"key": f"ua-mac/{n}"})
        )
        for n in range(messages)
    ]
    batcher.kafka.consumer = TrickleConsumer(clock, queued)  # type: ignore[assignment]
    batcher.kafka.producer = IdleProducer()  # type: ignore[assignment]
    batcher.pending = dict.fromkeys(pending)
    recorded: list[Window] = []

    def record(closed: list[Window], _dead: Any, _idle: Any) -> None:
        recorded.extend(closed)

    batcher._record = record  # type: ignore[method-assign]
    return batcher, backend, clock, recorded


def test_with_no_task_running_a_drained_read_closes_its_window_at_once() -> None:
    batcher, backend, _clock, recorded = batcher_with(3, messages=2)

    batcher.step()

    assert [(len(w.items), w.closed_by) for w in recorded] == [(2, "idle")]
    assert backend.asked == []  # nothing pending: nothing to ask


def test_while_enough_tasks_run_the_window_grows_until_one_ends() -> None:
    batcher, backend, clock, recorded = batcher_with(2, messages=1, pending=("t1", "t2", "t3"))

    batcher.step()
    assert recorded == [] and 2 in batcher.windows._open
    assert backend.asked == ["t1", "t2"]  # the oldest two are running: enough, no more asked

    backend.final.add("t1")
    batcher.step()  # within a second of the last asking: not asked again
    assert recorded == [] and backend.asked == ["t1", "t2"]

    clock.now += IDLE_RECHECK_S
    batcher.step()  # t1 ended, but t2 and t3 run: still two
    assert recorded == [] and list(batcher.pending) == ["t2", "t3"]
    assert backend.asked == ["t1", "t2", "t1", "t2", "t3"]

    backend.final.add("t2")
    clock.now += IDLE_RECHECK_S
    batcher.step()
    assert [w.closed_by for w in recorded] == ["idle"]
    assert list(batcher.pending) == ["t3"]


def test_a_full_read_closes_nothing_early_more_may_be_waiting() -> None:
    batcher, _backend, _clock, recorded = batcher_with(3, messages=READ_MAX + 1)

    batcher.step()
    assert recorded == [] and len(batcher.windows._open[2].items) == READ_MAX

    batcher.step()  # the last message: the read is drained now
    assert [(len(w.items), w.closed_by) for w in recorded] == [(READ_MAX + 1, "idle")]


@pytest.mark.parametrize("pending", [(), ("t1",)])
def test_idle_tasks_0_leaves_windows_to_max_files_bytes_and_age(pending: tuple[str, ...]) -> None:
    batcher, backend, clock, recorded = batcher_with(0, messages=1, pending=pending)

    batcher.step()
    assert recorded == [] and backend.asked == []

    clock.now += batcher.config.batcher.max_wait_s
    batcher.step()
    assert [w.closed_by for w in recorded] == ["waited"]
