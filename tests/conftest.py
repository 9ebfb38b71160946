"""Shared fixtures: a session-scoped real Kafka broker and per-test topic/group/config factories.

The broker is the embedded KRaft node started on a free port for the session (or the one named by
``KAFKA_BOOTSTRAP_SERVERS``). Tests that need it are marked ``broker``; the others need nothing.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from terra_xfer.broker import EmbeddedBroker, free_port
from terra_xfer.config import BrokerConfig, Config, KafkaConfig
from tests.broker_tag import TEST_BROKER_TAG
from tests.postgres import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    node = EmbeddedBroker(
        free_port(),
        tmp_path_factory.mktemp("broker"),
        BrokerConfig().kafka_version,
        heap="512m",
        controller_port=free_port(),
        tag=TEST_BROKER_TAG,
    )
    node.start(timeout_s=120)
    try:
        yield node.bootstrap
    finally:
        node.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (Debian's package) on a free loopback port.

    Tests that use it are marked ``postgres``; a server that cannot be started fails them, with
    the reason, rather than skipping them.
    """
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL could not be started: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Random names so tests never see each other's topics, groups or transactional ids."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_topic(admin: AdminClient, unique: Callable[[str], str]) -> Callable[..., str]:
    def make(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique("test")
        futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
        futures[name].result(timeout=30)
        return name

    return make


@pytest.fixture
def kafka_config(bootstrap: str) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=bootstrap)


@pytest.fixture
def pipeline_config(bootstrap: str, tmp_path: Path, unique: Callable[[str], str]) -> Config:
    """A full config on the session broker with its own topic prefix and directories."""
    base = Config()
    return dataclasses.replace(
        base,
        kafka=dataclasses.replace(
            base.kafka, bootstrap_servers=bootstrap, topic_prefix=unique("t") + ".", partitions=3
        ),
        gantry=dataclasses.replace(
            base.gantry, cache_root=tmp_path / "cache", xferlog=tmp_path / "log" / "xferlog"
        ),
        transfer=dataclasses.replace(
            base.transfer, destination_root=tmp_path / "dest", state_dir=tmp_path / "transfer"
        ),
        catalog=dataclasses.replace(base.catalog, path=tmp_path / "catalog.sqlite"),
        status=dataclasses.replace(
            base.status,
            index_path=tmp_path / "status.sqlite",
            keeper_path=tmp_path / "state-keeper.sqlite",
        ),
    )
