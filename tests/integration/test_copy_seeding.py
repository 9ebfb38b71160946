"""A replica whose copy of files.state is new seeds it from a peer's over HTTP and reads only what
the topic gained since, on a real broker: the state keeper's copy and a view, each next to a
peer that caught up from the topic and serves its copy on its metrics port."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from consumers.state.keeper_store import KeeperCopy
from consumers.state.view import StateFollower, TopicFollower
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.kafka import TxProducer
from terra_xfer.metrics_http import Health, serve
from terra_xfer.topics import FILES_STATE, create_topics
from tests.samples import sample

pytestmark = pytest.mark.broker
CODEC = Codec()


def _write(producer: TxProducer, topic: str, keys: list[str], state: str) -> None:
    with producer.transaction():
        for key in keys:
            record = sample("FileState") | {"key": key, "path": key, "state": state}
            producer.produce(topic, CODEC.encode("FileState", record), key.encode())


def _seeding(config: Config, url: str) -> Config:
    return dataclasses.replace(config, status=dataclasses.replace(config.status, seed_from=(url,)))


@pytest.mark.parametrize("kind", ["state-keeper", "sweeper-view", "batcher-view"])
def test_a_new_copy_is_seeded_from_a_peer_and_reads_only_what_came_since(
    pipeline_config: Config, tmp_path: Path, kind: str
) -> None:
    config = pipeline_config
    create_topics(config)
    topic = config.topic(FILES_STATE)
    producer = TxProducer(config.kafka, f"{topic}-seeding")
    producer.init()
    server = serve(0, Health())

    def copy(cfg: Config, home: str) -> TopicFollower:
        if kind == "state-keeper":
            return KeeperCopy(cfg, tmp_path / home / "keeper.sqlite")
        if kind == "batcher-view":  # rows only for the files at the destination
            return StateFollower(cfg, tmp_path / home / f"{kind}.sqlite", transferred_only=True)
        return StateFollower(cfg, tmp_path / home / f"{kind}.sqlite", records=False)

    before = [f"ua-mac/before/{i}" for i in range(600)]
    # A file changes state twice: the copies hold its last.
    _write(producer, topic, before, "ARRIVED")
    _write(producer, topic, before[:100], "TRANSFERRED")
    peer = copy(config, "peer")
    fresh = copy(_seeding(config, f"http://127.0.0.1:{server.port}"), "fresh")
    try:
        assert peer.catch_up(timeout_s=30) == 600  # from the topic: every file
        # Seeded, it is level with the peer: nothing of the topic is read again.
        assert fresh.catch_up(timeout_s=30) == 0
        assert fresh._file().holds_anything()
        assert fresh._stored_offsets() == peer._stored_offsets()
        after = [f"ua-mac/after/{i}" for i in range(40)]
        _write(producer, topic, after, "ARRIVED")
        _write(producer, topic, before[100:110], "TRANSFERRED")
        assert fresh.catch_up(timeout_s=30) == 50  # what came since, and only that
        assert peer.catch_up(timeout_s=30) == 50
        assert fresh._stored_offsets() == peer._stored_offsets()
        assert _states(fresh) == _states(peer)
        assert _states(fresh)["TRANSFERRED"] == 110
    finally:
        fresh.close()
        peer.close()
        server.close()
        producer.close()


def _states(follower: TopicFollower) -> dict[str, int]:
    if isinstance(follower, KeeperCopy):
        return follower.store.counts_by_state()
    assert isinstance(follower, StateFollower)
    return follower.index.counts_by_state()
