"""A batcher window's max_wait_s counts from when its first file is consumed.

librdkafka's ``consume(n, timeout)`` returns early only once ``n`` messages are there; a trickle of
arrivals never fills a poll of 500, so each such poll would wait out its whole timeout and the
window would open that much after its first file was in hand (and close that much late).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from consumers.batcher import Batcher
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.stages import registry
from tests.fakes import Clock, offline
from tests.samples import sample


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._where = (topic, partition, offset)
        self._value = value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"


class TrickleConsumer:
    """librdkafka's consume semantics on a clock: ``consume(n, t)`` returns at once when ``n``
    messages are there (or ``t`` is 0), else after waiting ``t`` with whatever is there."""

    def __init__(self, clock: Clock, messages: list[Msg]) -> None:
        self.clock = clock
        self.queue = list(messages)

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        if len(self.queue) < num_messages and timeout > 0:
            self.clock.now += timeout
        taken, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return taken

    def subscribe(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def assignment(self) -> list[Any]:
        return []


class Backend:
    raw_names = True


class IdleProducer:
    def init(self) -> None:
        return None


def test_a_window_opens_when_its_first_file_is_consumed(tmp_path: Path) -> None:
    batching = dataclasses.replace(Config().batcher, idle_tasks=0)  # windows wait for max_wait_s
    config = offline(batcher=batching)
    clock = Clock(100.0)
    batcher = Batcher(config, registry.spec("batcher"), backend=Backend(), clock=clock)  # type: ignore[arg-type]
    batcher.consumer.close()
    batcher.kafka.producer.close()
    topic = config.topic("files.arrived")
    value = Codec().encode("FileArrived", sample("FileArrived"))
    batcher.kafka.consumer = TrickleConsumer(clock, [Msg(topic, 2, 7, value)])  # type: ignore[assignment]
    batcher.kafka.producer = IdleProducer()  # type: ignore[assignment]
    started = clock.now

    assert batcher.step() == 1

    window = batcher.windows._open[2]
    assert (window.first_offset, len(window.items)) == (7, 1)
    assert window.opened_at == started
    assert batcher.windows.seconds_until_due(clock.now) == config.batcher.max_wait_s
