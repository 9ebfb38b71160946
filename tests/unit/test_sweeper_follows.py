"""The sweeper's view follows files.state between walks, so a restart catches up only seconds."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from consumers.state.status_index import StatusIndex
from producers.sweeper import FOLLOW_EVERY_S, FOLLOW_MAX_RECORDS, Sweeper
from terra_xfer import metrics
from terra_xfer.stages import registry
from terra_xfer.stages.outputs import now_ms
from tests.fakes import Clock, offline
from tests.samples import sample


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


def test_the_sweeper_reports_files_that_have_not_moved_for_a_day(tmp_path: Path) -> None:
    index = StatusIndex(tmp_path / "v.sqlite", keep_records=False)
    now = now_ms()
    old, fresh = now - 2 * 86_400_000, now
    rows = [
        ("a", "BATCHED", old),
        ("b", "BATCHED", fresh),
        ("c", "DONE", old),
        ("d", "FAILED", old),
    ]
    index.apply(
        [
            (0, i, key, sample("FileState") | {"key": key, "state": state, "updated_ms": at})
            for i, (key, state, at) in enumerate(rows)
        ]
    )
    sweeper = Sweeper(offline(), registry.spec("sweeper"), SimpleNamespace(index=index))  # type: ignore[arg-type]

    assert sweeper.report_stuck() == {"BATCHED": 1, "FAILED": 1}
    sweeper.kafka.close()
    index.close()
