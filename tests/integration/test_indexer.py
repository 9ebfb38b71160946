"""The indexer on a real broker: it keeps every file whole (a file settled long ago included), a
``status`` command writing the same index beside it changes nothing it wrote, a restart reads only
what files.state gained meanwhile, and a lost index is rebuilt from the topic."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from consumers.state.indexer import Indexer
from consumers.state.view import StateFollower
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.kafka import TxProducer
from terra_xfer.stages import registry
from terra_xfer.stages.spec import Wiring
from terra_xfer.topics import FILES_STATE, create_topics
from tests.samples import sample

YEAR_MS = 365 * 86_400_000
NOW_MS = int(time.time() * 1000)


def state(key: str, name: str = "ARRIVED", updated_ms: int = NOW_MS) -> dict[str, Any]:
    done = name == "DONE"
    value = sample("FileState") | {"key": key, "state": name, "updated_ms": updated_ms}
    return value | {"ingested": done, "deleted": done, "reason": None}


def write(producer: TxProducer, topic: str, states: list[dict[str, Any]]) -> None:
    codec = Codec()
    with producer.transaction():
        for value in states:
            producer.produce(topic, codec.encode("FileState", value), value["key"].encode())


def until(condition: Callable[[], bool], step: Callable[[], int], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "the indexer did not get there in time"
        step()


@contextlib.contextmanager
def indexer(config: Config) -> Any:
    spec = registry.spec("indexer")
    with contextlib.ExitStack() as held:
        stage = spec.build(Wiring(config, spec, held))
        held.callback(stage.close)
        assert isinstance(stage, Indexer)
        yield stage


def test_the_indexer_keeps_every_file_and_a_restart_reads_only_what_is_new(
    pipeline_config: Config,
) -> None:
    config = pipeline_config
    create_topics(config)
    topic = config.topic(FILES_STATE)
    producer = TxProducer(config.kafka, f"{topic}-indexer-test")
    producer.init()
    try:
        settled_long_ago = state("site/old/done.bin", "DONE", NOW_MS - YEAR_MS)
        first = [settled_long_ago, *(state(f"site/night1/{i}.bin") for i in range(200))]
        write(producer, topic, first)
        with indexer(config) as stage:
            assert stage.step() == len(first)  # the first step catches up with everything
            index = stage.view.index
            assert index.get(settled_long_ago["key"]) == settled_long_ago  # whole, a year on
            later = [state(f"site/night1/{i}.bin", "DONE") for i in range(50)]
            write(producer, topic, later)
            beside = StateFollower(config, config.status.index_path)  # as `status` reads it
            try:
                beside.catch_up(timeout_s=30)
            finally:
                beside.close()
            until(lambda: index.counts_by_state().get("DONE") == 51, stage.step)
            assert index.counts_by_state() == {"ARRIVED": 150, "DONE": 51}
        write(producer, topic, [state(f"site/night2/{i}.bin") for i in range(5)])
        with indexer(config) as again:
            assert again.step() == 5  # only what came meanwhile is written
            assert again.view.index.counts_by_state() == {"ARRIVED": 155, "DONE": 51}
        config.status.index_path.unlink()  # a lost index: rebuilt from the topic
        for side in ("-wal", "-shm"):
            config.status.index_path.with_name(config.status.index_path.name + side).unlink(
                missing_ok=True
            )
        with indexer(config) as rebuilt:
            rebuilt.step()
            assert rebuilt.view.index.counts_by_state() == {"ARRIVED": 155, "DONE": 51}
            assert rebuilt.view.index.get(settled_long_ago["key"]) == settled_long_ago
    finally:
        producer.close()
