"""Ingest answers each file on its own: one failing file never holds back the others.

The stage is driven without a broker: ``_take`` holds what a step consumed, ``_work`` makes the
catalog calls that are due, and ``held.offsets()`` is what the step's transaction would commit.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from consumers.catalog.base import (
    CatalogPermanentError,
    CatalogTransientError,
    CatalogUnavailable,
    IngestItem,
    IngestResult,
    Outcome,
)
from consumers.ingest import Ingest
from consumers.ingest_retries import RetrySchedule
from schemas.codec import Codec
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.stages.outputs import Decoded
from tests.samples import sample

CODEC = Codec()
DIR = "LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Catalog:
    """Refuses the names in ``refuse``; fails those in ``flaky`` transiently that many times;
    each call advances the clock by ``call_s``."""

    def __init__(self, clock: Clock, name: str = "fake", call_s: float = 0.0) -> None:
        self.name = name
        self.clock = clock
        self.call_s = call_s
        self.refuse: set[str] = set()
        self.flaky: dict[str, int] = {}
        self.held_back_s = 0.0  # as a backend whose circuit breaker is open
        self.whole_call: Exception | None = None
        self.calls: list[list[str]] = []

    def _one(self, item: IngestItem) -> Outcome:
        if item.file_name in self.refuse:
            return CatalogPermanentError(f"{item.file_name} refused")
        if self.held_back_s:
            return CatalogUnavailable("clowder: not sent", retry_after=self.held_back_s)
        if self.flaky.get(item.file_name, 0) > 0:
            self.flaky[item.file_name] = self.flaky.get(item.file_name, 0) - 1
            return CatalogTransientError(f"clowder POST /api/uploadToDataset/{item.file_name}: 502")
        return IngestResult("d1", f"f-{item.file_name}", ("c1",), True)

    def ingest(self, item: IngestItem) -> IngestResult:
        outcome = self._one(item)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def ingest_many(self, items: Sequence[IngestItem]) -> list[Outcome]:
        self.clock.now += self.call_s
        if self.whole_call is not None:
            raise self.whole_call
        self.calls.append([i.file_name for i in items])
        return [self._one(i) for i in items]

    def close(self) -> None:
        return None


class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._where = (partition, offset)

    def partition(self) -> int:
        return self._where[0]

    def offset(self) -> int:
        return self._where[1]


def transferred(name: str, offset: int, partition: int = 0, path: str | None = None) -> Decoded:
    value = sample("FileTransferred")
    path = path or f"{DIR}/{name}"
    value |= {"key": f"ua-mac/{path}", "path": path, "dest_path": f"raw/{name}"}
    return Decoded(Msg(partition, offset), "FileTransferred", value)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(clock: Clock) -> Iterator[Any]:
    made: list[Ingest] = []

    def build(catalog: Catalog, **options: Any) -> Ingest:
        schedule = RetrySchedule(first_s=1.0, max_s=8.0, rng=random.Random(5))
        options = {"clock": clock, "schedule": schedule, **options}
        made.append(Ingest(Config(), registry.spec("ingest"), catalog, **options))
        return made[-1]

    yield build
    for ingest in made:
        ingest.kafka.close()


def answers(outputs: Sequence[Any]) -> list[tuple[str, str]]:
    out = []
    for o in outputs:
        record, value = CODEC.decode(o.value)
        out.append((record, value["key"].rsplit("/", 1)[1]))
    return out


def transient_attempts() -> float:
    labels = {"outcome": "transient"}
    return metrics.REGISTRY.get_sample_value("terra_xfer_ingest_attempts_total", labels) or 0.0


def waiting(name: str, catalog: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {"catalog": catalog})


def step(ingest: Ingest, batch: Sequence[Decoded] = ()) -> list[Any]:
    """What one step would commit: the consumed batch taken, the due calls made."""
    for d in batch:
        ingest.held.consumed(d.msg.partition() or 0, d.msg.offset() or 0)
    outputs = ingest._take(batch)
    return outputs + ingest._work()[0]


def test_a_local_catalog_files_a_chunk_in_one_call_and_answers_each_file(
    make: Any, clock: Clock
) -> None:
    catalog = Catalog(clock, name="local")
    catalog.refuse = {"b_left.bin"}
    ingest = make(catalog)
    failed = Decoded(Msg(0, 1), "FileTransferFailed", sample("FileTransferFailed"))  # type: ignore[arg-type]
    batch = [
        transferred("a_left.bin", 0),
        failed,
        transferred("x.bin", 2, path="elsewhere/x.bin"),  # cannot be named: refused before
        transferred("b_left.bin", 3),
        transferred("c_left.bin", 4),
    ]

    outputs = step(ingest, batch)

    assert catalog.calls == [["a_left.bin", "b_left.bin", "c_left.bin"]]
    assert answers(outputs) == [
        ("FileIngestFailed", "x.bin"),
        ("FileIngested", "a_left.bin"),
        ("FileIngestFailed", "b_left.bin"),
        ("FileIngested", "c_left.bin"),
    ]
    assert CODEC.decode(outputs[3].value)[1]["file_id"] == "f-c_left.bin"
    assert ingest.ingested == 2 and ingest.held.offsets() == {0: 5}


def test_a_call_refused_as_a_whole_is_made_one_by_one(make: Any, clock: Clock) -> None:
    catalog = Catalog(clock, name="local")
    catalog.refuse = {"b_left.bin"}
    catalog.whole_call = CatalogPermanentError("the call is refused")
    ingest = make(catalog)

    outputs = step(ingest, [transferred("a_left.bin", 0), transferred("b_left.bin", 1)])

    assert answers(outputs) == [("FileIngested", "a_left.bin"), ("FileIngestFailed", "b_left.bin")]


def test_a_transient_failure_holds_back_only_its_file_and_the_offsets_after_it(
    make: Any, clock: Clock
) -> None:
    catalog = Catalog(clock)
    catalog.flaky = {"b_left.bin": 2}
    ingest = make(catalog)
    batch = [transferred(n, i) for i, n in enumerate(["a_left.bin", "b_left.bin", "c_left.bin"])]
    batch.append(transferred("d_left.bin", 0, partition=1))

    first = step(ingest, batch)

    assert answers(first) == [
        ("FileIngested", "a_left.bin"),
        ("FileIngestFailed", "b_left.bin"),  # not final: why b waits, for `status`
        ("FileIngested", "c_left.bin"),
        ("FileIngested", "d_left.bin"),
    ]
    assert ingest.held.offsets() == {0: 1, 1: 1}  # a restart reads b again, d is done
    ingest._show()  # what waits, labelled by the catalog (only ingest exports it)
    assert waiting("terra_xfer_ingest_waiting_files", catalog.name) == 1
    assert waiting("terra_xfer_ingest_oldest_waiting_seconds", catalog.name) == 0.0
    assert step(ingest) == []  # not due yet: nothing is sent
    assert catalog.calls == [["a_left.bin"], ["b_left.bin"], ["c_left.bin"], ["d_left.bin"]]

    clock.now += 1.0
    assert step(ingest) == []  # the second failure; the next attempt is further away
    clock.now += 2.0
    last = step(ingest)

    assert answers(last) == [("FileIngested", "b_left.bin")]
    assert CODEC.decode(last[0].value)[1]["file_id"] == "f-b_left.bin"
    assert ingest.held.offsets() == {0: 3, 1: 1} and len(ingest.held) == 0


def test_a_transient_failure_of_a_whole_call_holds_every_file_of_it(
    make: Any, clock: Clock
) -> None:
    catalog = Catalog(clock, name="local")
    catalog.whole_call = CatalogTransientError("database is locked")
    ingest = make(catalog)

    waiting = step(ingest, [transferred("a_left.bin", 0), transferred("b_left.bin", 1)])
    assert answers(waiting) == [
        ("FileIngestFailed", "a_left.bin"),
        ("FileIngestFailed", "b_left.bin"),
    ]
    assert ingest.held.offsets() == {0: 0} and len(ingest.held) == 2

    catalog.whole_call = None
    clock.now += 1.0
    assert answers(step(ingest)) == [("FileIngested", "a_left.bin"), ("FileIngested", "b_left.bin")]


def test_a_catalog_holding_its_requests_back_is_left_alone_until_it_says(
    make: Any, clock: Clock
) -> None:
    catalog = Catalog(clock)
    catalog.held_back_s = 3.0
    ingest = make(catalog)
    batch = [transferred(f"{n:02d}_left.bin", n) for n in range(30)]
    before = transient_attempts()

    assert step(ingest, batch) == []
    assert len(catalog.calls) == 1  # not one call per file
    clock.now += 2.9
    assert step(ingest) == [] and len(catalog.calls) == 1
    assert ingest._wait_s() == pytest.approx(0.1)

    catalog.held_back_s = 0.0
    clock.now += 0.1
    outputs = step(ingest)

    assert len(outputs) == 30 and ingest.held.offsets() == {0: 30}
    assert transient_attempts() == before  # held back is no failed attempt


def test_a_step_stops_calling_when_its_budget_is_spent(make: Any, clock: Clock) -> None:
    catalog = Catalog(clock, call_s=0.5)
    ingest = make(catalog, budget_s=2.0)
    batch = [transferred(f"{n:02d}_left.bin", n) for n in range(10)]

    assert len(step(ingest, batch)) == 4
    assert ingest.held.offsets() == {0: 4}
    assert len(step(ingest)) == 4
    assert len(step(ingest)) == 2 and len(ingest.held) == 0


def test_a_failing_files_reason_is_logged_once_per_cause_and_counted(
    make: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = Catalog(clock)
    catalog.flaky = {"a_left.bin": 3}
    ingest = make(catalog)
    before = transient_attempts()
    caplog.set_level(logging.INFO, logger="consumers.ingest")

    step(ingest, [transferred("a_left.bin", 0)])
    for _ in range(3):
        clock.now += 10.0
        step(ingest)

    waiting = [r.getMessage() for r in caplog.records if "not ingested yet" in r.getMessage()]
    assert len(waiting) == 1 and "502" in waiting[0] and "a_left.bin" in waiting[0]
    assert any("ingested at attempt 4" in r.getMessage() for r in caplog.records)
    assert transient_attempts() == before + 3


def test_a_waiting_file_tells_files_state_why_once_per_cause(make: Any, clock: Clock) -> None:
    catalog = Catalog(clock)
    catalog.flaky = {"a_left.bin": 3}
    ingest = make(catalog)

    first = step(ingest, [transferred("a_left.bin", 0), transferred("b_left.bin", 1)])
    told = [CODEC.decode(o.value) for o in first]
    waiting = [v for r, v in told if r == "FileIngestFailed"]
    assert [(v["final"], v["attempt"]) for v in waiting] == [(False, 1)]
    assert "502" in waiting[0]["reason"]
    assert [r for r, _ in told].count("FileIngested") == 1  # b went on
    again = []
    for _ in range(3):
        clock.now += 10.0
        again += [CODEC.decode(o.value)[0] for o in step(ingest)]
    assert again == ["FileIngested"]  # the same cause is not told twice; then it is ingested
