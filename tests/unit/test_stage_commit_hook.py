"""The transactional loop calls ``on_commit`` after a committed step, and never after an aborted one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from schemas.codec import Codec
from terra_xfer import stage
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.stage import Decoded, Output, TransactionalLoop
from tests.samples import sample

CODEC = Codec()


class Msg:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return CODEC.encode("FileArrived", sample("FileArrived"))

    def key(self) -> bytes:
        return b"k"

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class Consumer:
    def __init__(self) -> None:
        self.offset = 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        return None

    def consume(self, n: int, timeout: float) -> list[Msg]:
        """One new message per step: waited for, nothing more already fetched."""
        if timeout == 0:
            return []
        self.offset += 1
        return [Msg(self.offset)]


class Producer:
    """Records what happens; the commit fails while ``fail`` is set."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.fail = False

    def init(self) -> None:
        return None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield
        if self.fail:
            self.log.append("aborted")
            raise TransientError("commit failed")
        self.log.append("committed")

    def produce(self, *args: Any) -> None:
        self.log.append("produced")

    def send_offsets(self, consumer: Any, offsets: Any) -> None:
        return None


@pytest.fixture
def loop(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TransactionalLoop, list[str], Producer]]:
    log: list[str] = []

    def handler(batch: Sequence[Decoded]) -> list[Output]:
        return [Output("out", "k", b"v")]

    monkeypatch.setattr(stage, "rewind_to_committed", lambda consumer: log.append("rewound"))
    monkeypatch.setattr(stage, "member_consumer", lambda *a, **k: Consumer())
    producer = Producer(log)
    monkeypatch.setattr(stage, "TxProducer", lambda *a, **k: producer)
    looped = TransactionalLoop(
        Config(),
        "g",
        ["in"],
        handler,
        frozenset({"FileArrived"}),
        on_commit=lambda: log.append("hook"),
    )
    yield looped, log, producer


def test_the_hook_runs_once_the_step_is_committed(
    loop: tuple[TransactionalLoop, list[str], Producer],
) -> None:
    looped, log, _producer = loop
    assert looped.step() == 1
    assert log == ["produced", "committed", "hook"]


def test_an_aborted_step_never_reaches_the_hook(
    loop: tuple[TransactionalLoop, list[str], Producer],
) -> None:
    looped, log, producer = loop
    producer.fail = True
    assert looped.step() == 0
    assert log == ["produced", "aborted", "rewound"]
