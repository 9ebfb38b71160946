"""QuietRepeats: a message repeated every few milliseconds is written once a window, with a count."""

from __future__ import annotations

import logging

import pytest

from terra_xfer.logs import Demote, QuietRepeats


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("terra_xfer.librdkafka", logging.ERROR, __file__, 1, msg, args, None)


def test_alike_messages_are_held_back_and_counted() -> None:
    clock = Clock()
    quiet = QuietRepeats(window_s=60, clock=clock)
    refused = (
        "FAIL [rdkafka#producer-%d] 127.0.0.1:%d: Connect failed (after %dms in state CONNECT)"
    )
    shown = []
    for i in range(500):
        clock.now = i * 0.05  # every 50 ms for 25 s
        record = _record(refused, i % 3, 39092, i)
        if quiet.filter(record):
            shown.append(record.getMessage())
    assert len(shown) == 1
    clock.now = 61.0
    record = _record(refused, 1, 39092, 7)
    assert quiet.filter(record)
    assert record.getMessage().endswith("(499 alike in the last 60 s not shown)")


def test_different_messages_pass_and_the_window_restarts() -> None:
    clock = Clock()
    quiet = QuietRepeats(window_s=10, clock=clock)
    assert quiet.filter(_record("broker down"))
    assert quiet.filter(_record("coordinator moved"))
    assert not quiet.filter(_record("broker down"))
    clock.now = 10.0
    again = _record("broker down")
    assert quiet.filter(again)
    assert again.getMessage() == "broker down (1 alike in the last 10 s not shown)"
    clock.now = 11.0
    assert not quiet.filter(_record("broker down"))


def test_a_state_the_library_recovers_from_by_itself_is_logged_as_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.demoted")
    logger.addFilter(Demote("Coordinator load in progress"))
    try:
        with caplog.at_level(logging.INFO, logger="test.demoted"):
            logger.warning("TXNERR: Failed to acquire PID: Coordinator load in progress: retrying")
            logger.warning("connection refused")
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
            ("WARNING", "connection refused")
        ]
        with caplog.at_level(logging.DEBUG, logger="test.demoted"):
            logger.warning("Coordinator load in progress")
        assert caplog.records[-1].levelname == "DEBUG"
    finally:
        logger.filters.clear()
