"""The stage host (:mod:`terra_xfer.stages.host`): the one retry policy, the one loop, and a stop
flag a signal handler can set while other threads wait on it."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from confluent_kafka import KafkaError, KafkaException

from terra_xfer import metrics
from terra_xfer.errors import TransientError
from terra_xfer.stages.host import (
    FIRST_RETRY_S,
    IDLE_WAIT_S,
    MAX_RETRY_S,
    STILL_FAILING_EVERY_S,
    Beat,
    Retries,
    RunOptions,
    StopSignal,
    install_signal_handlers,
    step_loop,
    transient,
)
from tests.fakes import Clock

HOST = "terra_xfer.stages.host"


class Waits:
    """A stop flag that records every wait instead of waiting, and is set after ``limit`` waits."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.waits: list[float | None] = []

    def is_set(self) -> bool:
        return len(self.waits) >= self.limit

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def steps(*outcomes: int | Exception) -> Callable[[], int]:
    """A step that returns (or raises) each of ``outcomes`` in turn, then 0 for ever."""
    left = list(outcomes)

    def step() -> int:
        outcome = left.pop(0) if left else 0
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return step


def loop(
    name: str,
    step: Callable[[], int],
    stop: Waits,
    options: RunOptions | None = None,
    beat: Beat | None = None,
) -> int:
    """:func:`step_loop` with a fresh retry policy, stopped by ``stop``."""
    stopping = cast(StopSignal, stop)
    return step_loop(name, step, stopping, options or RunOptions(), Retries(name), beat)


def retried(stage: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("terra_xfer_stage_retries_total", {"stage": stage}) or 0
    )


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == HOST and r.levelno >= logging.WARN]


def test_transient_errors_are_retried_with_backoff_and_the_items_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, HOST)
    away = TransientError("broker 127.0.0.1:9092 away")
    stop, beats = Waits(limit=6), list[tuple[str, int]]()
    before = retried("host-a")
    handled = loop(
        "host-a", steps(2, away, away, away, 3, 0), stop, beat=lambda *b: beats.append(b)
    )
    assert handled == 5
    # three backoffs, doubling from the first; then a step that found nothing and idles
    assert stop.waits[:4] == [FIRST_RETRY_S, 2 * FIRST_RETRY_S, 4 * FIRST_RETRY_S, IDLE_WAIT_S]
    assert beats[:3] == [("host-a", 2), ("host-a", 5), ("host-a", 5)]  # after each good step
    assert retried("host-a") == before + 3
    told = warnings_of(caplog)
    assert told == ["host-a: broker 127.0.0.1:9092 away; retrying with backoff"]  # once
    assert any("working again after 3 failed attempts" in r.getMessage() for r in caplog.records)


def test_a_non_transient_error_ends_the_loop_and_is_raised() -> None:
    stop = Waits()
    with pytest.raises(RuntimeError, match="a bug"):
        loop("host-b", steps(1, RuntimeError("a bug"), 1), stop)
    assert stop.waits == []  # raised at once, not retried


def test_only_retriable_kafka_errors_are_transient() -> None:
    retriable = KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down", retriable=True))
    fatal = KafkaException(KafkaError(KafkaError._FENCED, "producer fenced", fatal=True))
    plain = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed"))
    found = transient(retriable)
    assert isinstance(found, TransientError) and "broker down" in str(found)
    assert transient(fatal) is None and transient(plain) is None
    assert transient(RuntimeError("x")) is None
    stop = Waits()
    with pytest.raises(KafkaException):
        loop("host-c", steps(retriable, fatal), stop)
    assert stop.waits == [FIRST_RETRY_S]


def test_the_backoff_is_capped_and_the_cause_told_once_a_minute_while_it_lasts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, HOST)
    clock = Clock()
    retries = Retries("host-d", clock=clock)
    delays = []
    for attempt in range(12):
        # the same cause, though its numbers change
        delays.append(retries.failed(TransientError(f"timed out after {100 + attempt} ms")))
        clock.now += 5.0
    assert delays[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_RETRY_S]
    assert set(delays[6:]) == {MAX_RETRY_S}
    # told at the first failure only, over the 55 s they took
    told = warnings_of(caplog)
    assert STILL_FAILING_EVERY_S == 60.0
    assert told == ["host-d: timed out after 100 ms; retrying with backoff"]
    caplog.clear()
    retries.failed(TransientError("timed out after 112 ms"))  # 60 s after the first was told
    assert warnings_of(caplog) == [
        "host-d: timed out after 112 ms (still, 13 attempts); retrying with backoff"
    ]
    caplog.clear()
    retries.failed(TransientError("connection refused"))  # another cause: told at once
    assert warnings_of(caplog) == ["host-d: connection refused; retrying with backoff"]
    retries.succeeded()
    assert retries.failures == 0
    assert retries.failed(TransientError("connection refused")) == FIRST_RETRY_S  # from the start


def test_a_cause_is_the_same_whatever_its_numbers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, HOST)
    retries = Retries("host-e", clock=Clock())
    for waited in (9, 10, 1000):
        retries.failed(TransientError(f"timed out after {waited} ms"))
    assert warnings_of(caplog) == ["host-e: timed out after 9 ms; retrying with backoff"]


def test_options_end_the_loop_after_one_step_some_items_or_a_while_idle() -> None:
    assert loop("o", steps(3, 4), Waits(), RunOptions(once=True)) == 3
    assert loop("o", steps(3, 4, 5), Waits(), RunOptions(max_items=7)) == 7
    idle = Waits()
    assert loop("o", steps(2), idle, RunOptions(idle_exit_s=0.0)) == 2
    assert idle.waits == []  # the first step that found nothing ended it


def test_a_stop_set_by_a_signal_handler_wakes_every_thread_waiting_on_it() -> None:
    stop = StopSignal()
    woken: list[bool] = []
    waiters = [
        threading.Thread(target=lambda: woken.append(stop.wait()), daemon=True) for _ in range(3)
    ]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:  # each one blocked in its wait (sleeping in select)
        wait_until(functools.partial(sleeping, waiter), what=f"{waiter.name} to wait")
    previous = signal.signal(signal.SIGUSR1, lambda _signum, _frame: stop.set())
    try:
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs in this (the main) thread
        assert stop.wait(30)
        for waiter in waiters:
            waiter.join(30)
            assert not waiter.is_alive(), "a waiter was not woken"
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert woken == [True, True, True]
    assert stop.is_set() and stop.wait(0)


def test_sigterm_sets_the_stop_and_a_second_one_is_not_caught_again() -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = StopSignal()
    try:
        install_signal_handlers(stop)
        waiter = threading.Thread(target=stop.wait, daemon=True)
        waiter.start()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(30)
        waiter.join(30)
        assert not waiter.is_alive()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second SIGTERM ends it
        assert signal.getsignal(signal.SIGINT) not in (signal.SIG_DFL, signal.default_int_handler)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def sleeping(thread: threading.Thread) -> bool:
    """Whether the kernel has ``thread`` asleep (blocked in a call), by its state letter."""
    text = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    return text[text.rindex(")") + 2] == "S"


def wait_until(done: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling /proc until the deadline
