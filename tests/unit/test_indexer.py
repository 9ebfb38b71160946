"""The indexer stage: the status index keeps every file whole, so it refuses a view that lets
files go; its first step catches up (readiness waits on it), later steps read a bounded slice."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from consumers.state.indexer import STEP_RECORDS, STEP_WAIT_S, Indexer
from consumers.state.retention import Retention
from consumers.state.view import StateFollower
from terra_xfer.config import Config
from terra_xfer.metrics import REGISTRY
from terra_xfer.stages import registry
from terra_xfer.stages.spec import Wiring


class Counts:
    """The index's surface as the indexer uses it: files per state."""

    def __init__(self, keep_records: bool) -> None:
        self.keep_records = keep_records
        self.counts = {"DONE": 4, "INGESTED": 1}

    def counts_by_state(self) -> dict[str, int]:
        return self.counts


class Follower:
    """A view's surface as the indexer uses it, recording the calls."""

    def __init__(self, *, retention: Retention | None = None, keep_records: bool = True) -> None:
        self.retention = retention
        self.index = Counts(keep_records)
        self.calls: list[tuple[Any, ...]] = []

    def catch_up(self) -> int:
        self.calls.append(("catch_up",))
        return 7

    def refresh(self, max_messages: int, timeout_s: float) -> int:
        self.calls.append(("refresh", max_messages, timeout_s))
        return 3


def test_the_first_step_catches_up_and_later_steps_follow_in_bounded_reads() -> None:
    view = Follower()
    indexer = Indexer(view)  # type: ignore[arg-type]
    assert [indexer.step(), indexer.step(), indexer.step()] == [7, 3, 3]
    refresh = ("refresh", STEP_RECORDS, STEP_WAIT_S)
    assert view.calls == [("catch_up",), refresh, refresh]


@pytest.mark.parametrize(
    "view",
    [
        Follower(retention=Retention(60_000)),
        Follower(keep_records=False),
    ],
    ids=["retention", "columns only"],
)
def test_a_view_that_does_not_keep_every_file_whole_is_refused(view: Follower) -> None:
    with pytest.raises(ValueError, match="every file's whole record"):
        Indexer(view)  # type: ignore[arg-type]


def test_the_registry_gives_it_the_status_index_itself(tmp_path: Path) -> None:
    base = Config()
    config = dataclasses.replace(
        base, status=dataclasses.replace(base.status, index_path=tmp_path / "status.sqlite")
    )
    with contextlib.ExitStack() as held:
        stage = registry.spec("indexer").build(Wiring(config, registry.spec("indexer"), held))
        assert isinstance(stage, Indexer) and isinstance(stage.view, StateFollower)
        assert stage.view.index.path == config.status.index_path
        assert stage.view.retention is None and stage.view.index.keep_records


def test_it_publishes_the_files_per_state_of_the_index_it_keeps() -> None:
    view = Follower()
    indexer = Indexer(view)  # type: ignore[arg-type]
    view.index.counts = {"DONE": 1234, "QUARANTINED": 2}
    indexer.step()
    for state, files in {"DONE": 1234, "QUARANTINED": 2, "ARRIVED": 0, "BATCHED": 0}.items():
        assert REGISTRY.get_sample_value("terra_xfer_files_by_state", {"state": state}) == files
