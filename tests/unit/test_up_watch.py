"""``up`` off a terminal: an idle exit comes on time, and the progress is logged every 10 s."""

from __future__ import annotations

import logging

import pytest

from terra_xfer.cli import up
from terra_xfer.stages.host import StopSignal


class Runner:
    """Stages that handle nothing; each tick moves the clock on by the time asked."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.ticks: list[float] = []
        self.waiting: dict[str, str] = {}
        self.handled = {"gantry": 0}

    def tick(self, seconds: float) -> None:
        self.ticks.append(seconds)
        self.clock[0] += seconds


class Progress:
    def __init__(self) -> None:
        self.lines = 0

    def line(self, _waiting: dict[str, str]) -> str:
        self.lines += 1
        return f"line {self.lines}"


def test_off_a_terminal_up_exits_when_idle_on_time_and_logs_every_ten_seconds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [0.0]
    monkeypatch.setattr(up.time, "monotonic", lambda: clock[0])
    runner, progress = Runner(clock), Progress()
    with caplog.at_level(logging.INFO, logger=up.__name__):
        up._watch(runner, StopSignal(), 25.0, progress, live=None)  # type: ignore[arg-type]

    assert clock[0] == 26.0  # 25 s after the first tick (not at the next 10 s tick)
    assert set(runner.ticks) == {1.0}
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("line")] == [
        "line 1",
        "line 2",
        "line 3",
    ]  # at 1 s, 11 s and 21 s
