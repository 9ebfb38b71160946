"""A long catch-up of a local copy of files.state (one rebuilt from the whole topic) goes on while
records come, says how far it is to the stage's readiness, and gives up only when nothing comes.

No broker: the follower's consumer is a stand-in, and time is a fake clock each read moves on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from consumers.state import view as view_module
from consumers.state.view import StateFollower
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.metrics_http import Health
from terra_xfer.stages.host import RunOptions, StopSignal, run_stage
from terra_xfer.stages.spec import StageSpec, Wiring
from terra_xfer.stages.stall_guard import StallGuard
from tests.samples import sample
from tests.state_feed import End, Msg

CODEC = Codec()
TOTAL = 40


class Slow:
    """A consumer that hands out one record per read, each read taking 1 s of the fake clock,
    then the partition's end (or nothing at all, with ``stalls``)."""

    def __init__(self, clock: list[float], stalls: bool = False) -> None:
        self.clock = clock
        self.stalls = stalls
        self.next = 0

    def assign(self, partitions: list[Any]) -> None:
        return None

    def consume(self, n: int, timeout: float) -> list[Msg | End]:
        self.clock[0] += 1.0
        if self.stalls:
            return []
        if self.next == TOTAL:
            return [End()]
        value = sample("FileState") | {"key": f"ua-mac/f{self.next}", "path": f"f{self.next}"}
        self.next += 1
        return [Msg(0, self.next - 1, value["key"], CODEC.encode("FileState", value))]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.next) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, TOTAL

    def close(self) -> None:
        return None


def follower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stalls: bool = False
) -> tuple[StateFollower, list[str | None]]:
    clock = [0.0]
    monkeypatch.setattr(view_module.time, "monotonic", lambda: clock[0])
    told: list[str | None] = []
    view = StateFollower(Config(), tmp_path / "v.sqlite", progress=told.append)
    consumer = Slow(clock, stalls)
    view._new_consumer = lambda: consumer  # type: ignore[method-assign]
    view._partitions = [0]
    return view, told


def test_a_catch_up_longer_than_its_timeout_goes_on_while_records_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, _told = follower(tmp_path, monkeypatch)

    assert view.catch_up(timeout_s=3.0) == TOTAL  # 41 s of reads, never 3 s without a record

    assert view.index.offsets() == {0: TOTAL}
    view.close()


def test_a_long_catch_up_tells_readiness_how_far_it_is_then_that_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, told = follower(tmp_path, monkeypatch)

    view.catch_up()

    progress = [t for t in told if t is not None]
    assert len(progress) == TOTAL // int(view_module.PROGRESS_EVERY_S)
    assert progress[0] == (
        f"catching up its copy of {view.topic} (v): 5 records read in 5 s, 35 to go"
    )
    assert told[-1] is None  # caught up: no longer waiting
    view.close()


def test_a_catch_up_that_reads_nothing_gives_up_after_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, _told = follower(tmp_path, monkeypatch, stalls=True)

    with pytest.raises(TransientError, match="made no progress for 3 s"):
        view.catch_up(timeout_s=3.0)
    view.close()


def test_what_a_stage_is_built_with_tells_its_process_readiness(tmp_path: Path) -> None:
    class Idle:
        def step(self) -> int:
            return 0

        def close(self) -> None:
            return None

    def build(w: Wiring) -> Idle:
        w.waiting("catching up its copy of files.state (batcher-view): 5 records read")
        return Idle()

    health = Health()
    health.expect("batcher")
    run_stage(
        StageSpec("batcher", "A stand-in.", build, deployment=None),
        Config(),
        StopSignal(),
        RunOptions(once=True),
        health=health,
        beat=lambda name, _handled: health.beat(name),
    )

    ok, why = health.ready()
    assert (ok, why) == (
        True,
        "ready; batcher catching up its copy of files.state (batcher-view): 5 records read",
    )


def test_a_catch_up_longer_than_the_stall_limit_is_not_taken_for_a_stuck_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost copy at a site of millions of files rebuilds for longer than ``stall_exit_s``
    (900 s): every read that brings records tells the stall guard the step gets on, so the guard
    ends the process only when reads stop bringing any."""
    clock = [0.0]
    monkeypatch.setattr(view_module.time, "monotonic", lambda: clock[0])
    stalls: list[tuple[str, float]] = []
    guard = StallGuard(
        10.0, on_stall=lambda name, s: stalls.append((name, s)), clock=lambda: clock[0]
    )

    def build(w: Wiring) -> Rebuilding:
        view = StateFollower(Config(), tmp_path / "v.sqlite", progress=w.waiting, alive=w.alive)
        view._new_consumer = lambda: Checked(clock, guard)  # type: ignore[method-assign]
        view._partitions = [0]
        return Rebuilding(view)

    run_stage(
        StageSpec("indexer", "A stand-in.", build, deployment=None),
        Config(),
        StopSignal(),
        RunOptions(once=True),
        guard=guard,
    )
    assert clock[0] == TOTAL + 1  # one step of 41 s of reads, against a limit of 10 s
    assert stalls == []

    stuck = StateFollower(Config(), tmp_path / "s.sqlite", alive=lambda: guard.alive("sweeper"))
    stuck._new_consumer = lambda: Checked(clock, guard, stalls=True)  # type: ignore[method-assign]
    stuck._partitions = [0]
    with pytest.raises(TransientError):
        guard.watch("sweeper", lambda: stuck.catch_up(timeout_s=60.0))()
    # Reads that bring nothing: the step is reported once it has run past the limit.
    assert {name for name, _s in stalls} == {"sweeper"}
    assert stalls[0][1] == 10.0
    stuck.close()


class Rebuilding:
    """A stage whose one step is its copy's whole catch-up (as the indexer's first step is)."""

    def __init__(self, view: StateFollower) -> None:
        self.view = view

    def step(self) -> int:
        return self.view.catch_up()

    def close(self) -> None:
        self.view.close()


class Checked(Slow):
    """:class:`Slow`, with the stall guard looking at the step after every read (as its thread
    does every few seconds)."""

    def __init__(self, clock: list[float], guard: StallGuard, stalls: bool = False) -> None:
        super().__init__(clock, stalls)
        self.guard = guard

    def consume(self, n: int, timeout: float) -> list[Msg | End]:
        got = super().consume(n, timeout)
        self.guard.check()
        return got
