"""A state keeper whose commit committed though its answer was lost folds from files.state next.

``commit_transaction`` can fail (a timeout, a broker restart) after the broker has committed: the
step's states are in files.state and its offsets are committed, yet the keeper was told nothing.
Folding the next event onto its memory, which lacks that step's states, would write a state that
forgets them (a history without TRANSFERRED although the file was transferred). After any failed
step the keeper reads files.state again before it folds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from confluent_kafka import Producer

from consumers.state.keeper import StateKeeper
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import client_config
from terra_xfer.partitioner import partition_of
from terra_xfer.stages import registry
from terra_xfer.stages.outputs import Output
from terra_xfer.topics import (
    FILES_ARRIVED,
    FILES_DELETED,
    FILES_STATE,
    FILES_TRANSFERRED,
    create_topics,
)
from tests.kafka_read import read_all, wait_for
from tests.samples import KEY, sample

pytestmark = pytest.mark.broker
CODEC = Codec()


@pytest.fixture
def keeper(pipeline_config: Config) -> Iterator[StateKeeper]:
    create_topics(pipeline_config)
    k = StateKeeper(pipeline_config, registry.spec("state-keeper"))
    yield k
    k.close()


def publish(config: Config, topic: str, record: str) -> None:
    """One event of ``record`` for KEY, on the partition that owns KEY."""
    producer = Producer(client_config(config.kafka))
    partition = partition_of(KEY, config.kafka.partitions)
    value = CODEC.encode(record, sample(record))
    producer.produce(config.topic(topic), value, KEY.encode(), partition=partition)
    assert producer.flush(30) == 0


def step(keeper: StateKeeper) -> int:
    """One step; a transient failure counts as a step that handled nothing (the host retries)."""
    try:
        return keeper.step()
    except TransientError:
        return 0


def history(config: Config) -> list[str]:
    """The states in KEY's latest files.state history."""
    records = [v for name, v in read_all(config.kafka, config.topic(FILES_STATE)) if name]
    mine = [v for v in records if v["key"] == KEY]
    return [t["state"] for t in mine[-1]["history"]] if mine else []


def test_after_a_commit_whose_answer_was_lost_the_keeper_folds_from_the_topic(
    pipeline_config: Config, keeper: StateKeeper
) -> None:
    config = pipeline_config
    lost: list[bool] = []
    really_commit = keeper.loop.kafka.commit

    def commit_then_lose_the_answer(
        outputs: Sequence[Output] = (), offsets: Sequence[Any] = (), **kw: Any
    ) -> None:
        outputs = list(outputs)
        really_commit(outputs, offsets, **kw)
        states = [CODEC.decode(o.value or b"")[1] for o in outputs if o.topic.endswith("state")]
        if not lost and any(s["state"] == "TRANSFERRED" for s in states):
            lost.append(True)
            raise TransientError("commit_transaction: Local: Timed out (the broker committed)")

    keeper.loop.kafka.commit = commit_then_lose_the_answer  # type: ignore[method-assign,assignment]
    publish(config, FILES_ARRIVED, "FileArrived")
    publish(config, FILES_TRANSFERRED, "FileTransferred")
    wait_for(lambda: step(keeper) >= 0 and lost, what="a step that folds TRANSFERRED")
    assert history(config)[-1] == "TRANSFERRED"  # committed, though the keeper was not told

    publish(config, FILES_DELETED, "FileDeleted")
    wait_for(lambda: step(keeper) >= 0 and "DELETED" in history(config), what="DELETED folded")

    assert history(config) == ["ARRIVED", "TRANSFERRED", "DELETED"]
