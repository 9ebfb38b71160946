"""consume_ready waits only for the first message, then takes what is already fetched."""

from __future__ import annotations

from typing import Any

from terra_xfer.kafka import consume_ready


class Queue:
    """A consumer whose local queue holds ``ready`` messages; records how it was asked."""

    def __init__(self, ready: int) -> None:
        self.ready = list(range(ready))
        self.calls: list[tuple[int, float]] = []

    def consume(self, n: int, timeout: float) -> list[Any]:
        self.calls.append((n, timeout))
        taken, self.ready = self.ready[:n], self.ready[n:]
        return taken


def test_a_trickle_is_taken_without_waiting_for_a_full_batch() -> None:
    queue = Queue(ready=3)
    assert consume_ready(queue, 500, 0.5) == [0, 1, 2]  # type: ignore[arg-type]
    assert queue.calls == [(1, 0.5), (499, 0)]  # only the first message is waited for


def test_a_backlog_fills_the_batch() -> None:
    queue = Queue(ready=2000)
    assert len(consume_ready(queue, 500, 0.5)) == 500  # type: ignore[arg-type]


def test_nothing_there_is_one_wait() -> None:
    queue = Queue(ready=0)
    assert consume_ready(queue, 500, 0.5) == []  # type: ignore[arg-type]
    assert queue.calls == [(1, 0.5)]
