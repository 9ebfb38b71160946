"""The sweeper's view follows files.state between walks, so a restart catches up only seconds."""

from __future__ import annotations

from producers.sweeper import FOLLOW_EVERY_S, FOLLOW_MAX_RECORDS, Sweeper
from terra_xfer import metrics
from terra_xfer.stages import registry
from tests.fakes import Clock, offline


class View:
    def __init__(self) -> None:
        self.refreshed: list[int] = []

    def refresh(self, max_messages: int = 10_000) -> int:
        self.refreshed.append(max_messages)
        return 0


def test_the_sweeper_reads_files_state_every_few_seconds_between_walks() -> None:
    view = View()
    sweeper = Sweeper(offline(), registry.spec("sweeper"), view)  # type: ignore[arg-type]
    clock = Clock(0.0)
    sweeper.following = metrics.Periodic(FOLLOW_EVERY_S, sweeper._follow, clock=clock)
    sweeper.gauges = metrics.Periodic(3600, lambda: None)
    sweeper.next_run = float("inf")  # no walk is due

    for _ in range(3):
        assert sweeper.step() == 0
    clock.now += FOLLOW_EVERY_S
    sweeper.step()

    assert view.refreshed == [FOLLOW_MAX_RECORDS, FOLLOW_MAX_RECORDS]
    sweeper.kafka.close()
