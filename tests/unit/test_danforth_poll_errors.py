"""A Danforth poll that cannot read the LemnaTec database is counted, retried later, and ships
nothing; the count is what the TerraXferDanforthPollFailing alert watches."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from producers.danforth.lemnatec import LemnaTecUnavailableError
from producers.danforth.progress import Position
from producers.danforth.service import DanforthProducer
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.stages import registry
from tests.fakes import Clock, offline


class RefusingDb:
    """A database that refuses every connection, as with a wrong password."""

    database = "LTSystem"

    def __init__(self) -> None:
        self.polls = 0

    def newer(self, after_id: int, limit: int) -> list[Any]:
        self.polls += 1
        raise LemnaTecUnavailableError("password authentication failed for user lemnatec")

    def by_id(self, ids: Sequence[int]) -> list[Any]:
        raise AssertionError("not reached")


def poll_errors() -> float:
    return metrics.REGISTRY.get_sample_value("terra_xfer_danforth_poll_errors_total") or 0.0


def test_a_failed_poll_is_counted_and_retried_after_poll_s(tmp_path: Path) -> None:
    danforth = dataclasses.replace(
        Config().danforth, cache_root=tmp_path / "cache", blob_root=tmp_path / "blobs"
    )
    config = offline(danforth=danforth)
    clock, db = Clock(), RefusingDb()
    producer = DanforthProducer(config, registry.spec("danforth"), db=db, clock=clock)  # type: ignore[arg-type]
    try:
        producer.position = Position()  # as if started: no Kafka needed to poll
        before = poll_errors()

        assert producer.step() == 0
        assert producer.step() == 0  # within poll_s: not polled again
        clock.now += config.danforth.poll_s
        assert producer.step() == 0

        assert db.polls == 2
        assert poll_errors() - before == 2
        assert producer.position == Position()  # nothing committed past
    finally:
        producer.kafka.close()
