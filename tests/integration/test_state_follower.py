"""StateFollower.catch_up on a real broker: everything committed before the call is applied, and
the call returns while files.state keeps being written (it does not chase a moving end)."""

from __future__ import annotations

import threading
from pathlib import Path

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
