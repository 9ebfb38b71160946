"""The short chaos runs: random kill -9s, a broker restart, remote faults; every promise checked
afterwards (see tests/chaos). One kills stage processes, the other `terra-xfer up` itself, which
runs them all. The long form: ``python -m tests.chaos --long``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.run import SHORT, SHORT_SUPERVISED, as_dict, run

pytestmark = pytest.mark.broker


def test_short_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    report = run(SHORT, tmp_path, say=lambda text: None)
    print(json.dumps(as_dict(report), indent=2))  # the figures, shown with -s or on failure
    assert report.violations == []
    assert report.drain_s is not None
    assert sum(report.kills.values()) == SHORT.kills and report.broker_restarts == 1
    assert sum(report.faults.values()) > 0 and report.bad_lines == 5


def test_short_chaos_run_killing_up_itself_keeps_every_promise(tmp_path: Path) -> None:
    report = run(SHORT_SUPERVISED, tmp_path, say=lambda text: None, kill_supervisor=True)
    print(json.dumps(as_dict(report), indent=2))
    assert report.violations == []  # with no stage of a killed up left running
    assert report.orphans == [] and report.drain_s is not None
    assert report.kills == {"up": SHORT_SUPERVISED.kills} and report.broker_restarts == 1
    assert sum(report.faults.values()) > 0 and report.bad_lines == 5
