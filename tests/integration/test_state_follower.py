"""StateFollower.catch_up on a real broker: everything committed before the call is applied, and
the call returns while files.state keeps being written (it does not chase a moving end)."""

from __future__ import annotations

import threading
from pathlib import Path

from consumers.state.keeper_store import KeeperCopy
from consumers.state.retention import Retention
from consumers.state.view import StateFollower
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.kafka import TxProducer
from terra_xfer.topics import FILES_STATE, create_topics
from tests.samples import sample


def _state(key: str) -> bytes:
    record = sample("FileState") | {"key": key}
    return Codec().encode("FileState", record)


def _write(producer: TxProducer, topic: str, keys: list[str]) -> None:
    with producer.transaction():
        for key in keys:
            producer.produce(topic, _state(key), key.encode())


def test_catch_up_returns_under_a_steady_stream(pipeline_config: Config, tmp_path: Path) -> None:
    config = pipeline_config
    create_topics(config)
    topic = config.topic(FILES_STATE)
    producer = TxProducer(config.kafka, f"{topic}-writer")
    producer.init()
    before = [f"before/{i}" for i in range(300)]
    _write(producer, topic, before)
    stop = threading.Event()
    written: list[str] = []

    def stream() -> None:
        # A committed transaction touching every partition about every 20 ms: whenever the
        # follower reads, each partition has moved on since its last end.
        n = 0
        while not stop.is_set():
            keys = [f"during/{n}/{j}" for j in range(12)]
            _write(producer, topic, keys)
            written.extend(keys)
            n += 1
            stop.wait(0.02)

    writer = threading.Thread(target=stream, daemon=True)
    writer.start()
    try:
        follower = StateFollower(config, tmp_path / "view.sqlite")
        try:
            assert writer.is_alive()
            follower.catch_up(timeout_s=30)
            assert all(follower.get(k) is not None for k in before)
        finally:
            follower.close()
        assert written, "the stream was writing while the follower caught up"
    finally:
        stop.set()
        writer.join(30)
        producer.close()


def test_a_copy_rebuilt_from_a_real_topic_lets_settled_files_go_and_a_running_one_prunes(
    pipeline_config: Config, tmp_path: Path
) -> None:
    """Retention on a real files.state: the batcher-like view and the keeper's copy, rebuilt from
    the topic, skip files settled before the window; files that settle old while a copy runs go
    at its next prune. The wall clock is the test's, so the window can be a minute."""
    config = pipeline_config
    create_topics(config)
    topic = config.topic(FILES_STATE)
    producer = TxProducer(config.kafka, f"{topic}-retention")
    producer.init()
    now = [10_000_000_000_000]

    def state(key: str, name: str, updated_ms: int) -> bytes:
        done = name == "DONE"
        value = sample("FileState") | {"key": key, "state": name, "updated_ms": updated_ms}
        return Codec().encode("FileState", value | {"ingested": done, "deleted": done})

    with producer.transaction():
        producer.produce(topic, state("old/done", "DONE", now[0] - 120_000), b"old/done")
        producer.produce(topic, state("old/batched", "BATCHED", now[0] - 120_000), b"old/batched")
        producer.produce(topic, state("new/done", "DONE", now[0] - 1_000), b"new/done")

    def window() -> Retention:
        return Retention(60_000, every_s=0.0, wall_ms=lambda: now[0])

    view = StateFollower(config, tmp_path / "view.sqlite", records=False, retention=window())
    copy = KeeperCopy(config, tmp_path / "keeper.sqlite", window())
    try:
        view.catch_up(timeout_s=30)
        copy.catch_up(timeout_s=30)
        kept = {"old/batched", "new/done"}
        assert {r["key"] for r in view.index.query()} == kept
        assert set(copy.store.get_many(["old/done", *kept])) == kept

        now[0] += 120_000  # two minutes on: new/done settled before the window too
        assert view.prune() == 1 and copy.prune() == 1
        assert {r["key"] for r in view.index.query()} == {"old/batched"}
        assert set(copy.store.get_many(["new/done", "old/batched"])) == {"old/batched"}
    finally:
        view.close()
        copy.close()
        producer.close()
