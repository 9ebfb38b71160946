"""The short chaos runs: random kill -9s, a broker restart, remote faults; every promise checked
afterwards (see tests/chaos). One kills stage processes, one `terra-xfer up` itself, which runs
them all, and one runs every consuming stage as replicas and scales, kills, freezes and rolls them.
The long forms: ``python -m tests.chaos --long [--kill-supervisor | --scale-out]``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.run import SHORT, SHORT_SCALE, SHORT_SUPERVISED, as_dict, run
from tests.chaos.scale import KINDS

pytestmark = pytest.mark.broker


@pytest.mark.slow
def test_short_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    report = run(SHORT, tmp_path, say=lambda text: None)
    print(json.dumps(as_dict(report), indent=2))  # the figures, shown with -s or on failure
    assert report.violations == []
    assert report.drain_s is not None
    assert sum(report.kills.values()) == SHORT.kills and report.broker_restarts == 1
    assert sum(report.faults.values()) > 0 and report.bad_lines == 5


@pytest.mark.slow
def test_short_chaos_run_killing_up_itself_keeps_every_promise(tmp_path: Path) -> None:
    report = run(SHORT_SUPERVISED, tmp_path, say=lambda text: None, mode="up")
    print(json.dumps(as_dict(report), indent=2))
    assert report.violations == []  # with no stage of a killed up left running
    assert report.orphans == [] and report.drain_s is not None
    assert report.kills == {"up": SHORT_SUPERVISED.kills} and report.broker_restarts == 1
    assert sum(report.faults.values()) > 0 and report.bad_lines == 5


@pytest.mark.slow
def test_short_scale_out_run_keeps_every_promise(tmp_path: Path) -> None:
    report = run(SHORT_SCALE, tmp_path, say=lambda text: None, mode="scale-out")
    print(json.dumps(as_dict(report), indent=2))
    assert report.violations == []  # files.state true record by record, with 1-3 keepers
    assert report.drain_s is not None
    assert sum(report.scale_events.values()) == SHORT_SCALE.kills
    assert set(report.scale_events) == set(KINDS)  # the short night still meets every kind
    assert report.kills.get("state-keeper", 0) > 0 and report.pods_started > 5
    # The keeper the first event added seeded its copy from a ready peer's, and every invariant
    # above held with the states it folded onto it.
    assert report.copies_seeded.get("state-keeper", 0) >= 1
    assert sum(report.faults.values()) > 0 and report.bad_lines == 5
