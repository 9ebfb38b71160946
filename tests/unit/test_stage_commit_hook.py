"""The transactional loop calls ``on_commit`` after a committed step, and never after an aborted one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.stages import commit
from terra_xfer.stages.consume_loop import TransactionalLoop
from terra_xfer.stages.outputs import Decoded, Output
from terra_xfer.stages.spec import Stage, StageSpec, Wiring
from tests.samples import sample

CODEC = Codec()


def built_by_the_test(_wiring: Wiring) -> Stage:
    raise AssertionError("the test builds its loop itself")


SPEC = StageSpec(
    "hooked",
    "A stage that consumes FileArrived.",
    built_by_the_test,
    group="g",
    inputs=("in",),
    accepts=frozenset({"FileArrived"}),
)


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

    monkeypatch.setattr(commit, "rewind_to_committed", lambda consumer: log.append("rewound"))
    monkeypatch.setattr(commit, "member_consumer", lambda *a, **k: Consumer())
    producer = Producer(log)
    monkeypatch.setattr(commit, "TxProducer", lambda *a, **k: producer)
    looped = TransactionalLoop(Config(), SPEC, handler, on_commit=lambda: log.append("hook"))
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
    with pytest.raises(TransientError, match="commit failed"):  # for the host to retry
        looped.step()
    assert log == ["produced", "aborted", "rewound"]
    producer.fail = False
    log.clear()
    assert looped.step() == 1  # the retried step commits, and only then is the hook told
    assert log == ["produced", "committed", "hook"]
