"""The circuit breaker opens when most recent calls fail, probes with one trial, and closes."""

from __future__ import annotations

import pytest

from terra_xfer.circuit_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(
        window=10, min_calls=5, failure_ratio=0.8, first_open_s=1.0, max_open_s=4.0, clock=clock
    )


def test_it_stays_closed_while_failures_stay_below_the_ratio(clock: Clock) -> None:
    b = breaker(clock)
    for ok in [False, True, False, True, False, False, True, False, True, False] * 3:
        assert b.allow()
        b.record(ok)
    assert b.state == CLOSED and b.wait_s() == 0.0


def test_it_waits_for_enough_calls_before_judging(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(4):
        b.record(False)
    assert b.state == CLOSED
    b.record(False)
    assert b.state == OPEN and not b.allow()
    assert b.wait_s() == 1.0


def test_after_the_open_period_one_trial_goes_and_its_success_closes_it(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(5):
        b.record(False)
    clock.now += 1.0
    assert b.state == HALF_OPEN

    assert b.allow()
    assert not b.allow()  # one trial at a time
    b.record(True)

    assert b.state == CLOSED and b.allow()
    for _ in range(4):  # the window started again: four failures are not yet enough
        b.record(False)
    assert b.state == CLOSED


def test_a_failed_trial_opens_it_for_twice_as_long_up_to_the_cap(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(5):
        b.record(False)
    periods = []
    for _ in range(4):
        clock.now += b.wait_s()
        assert b.allow()
        b.record(False)
        periods.append(b.wait_s())
        assert b.state == OPEN
    assert periods == [2.0, 4.0, 4.0, 4.0]

    clock.now += 4.0
    assert b.allow()
    b.record(True)
    for _ in range(5):
        b.record(False)
    assert b.wait_s() == 1.0  # a new opening starts from the first period again


def test_a_trial_whose_outcome_is_never_told_does_not_block_it_for_ever(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(5):
        b.record(False)
    clock.now += 1.0
    assert b.allow()
    assert not b.allow()

    clock.now += 1.0
    assert b.allow()


def test_late_outcomes_while_open_change_nothing(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(5):
        b.record(False)
    b.record(True)
    b.record(True)
    assert b.state == OPEN and b.wait_s() == 1.0


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(window=5, min_calls=6)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_ratio=0.0)
