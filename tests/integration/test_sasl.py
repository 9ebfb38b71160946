"""Kafka with SASL/SCRAM-SHA-512: the embedded broker's SASL listener and our clients on it.

This module starts its own broker (free ports, its own data directory) with a SCRAM user created
at format time, and stops it at the end; the session's PLAINTEXT broker is not touched. A client
with the user's credentials produces, consumes and runs transactions; one without credentials or
with a wrong password is refused with a clear KafkaAuthError from ``check_access``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from terra_xfer.broker import EmbeddedBroker, free_port, port_open
from terra_xfer.broker_scram import ScramUser
from terra_xfer.config import BrokerConfig, KafkaConfig, Secret, load
from terra_xfer.kafka import TxProducer, client_config, make_consumer
from terra_xfer.kafka_security import KafkaAuthError, check_access
from terra_xfer.reading import read_to_end
from tests.broker_tag import TEST_BROKER_TAG

pytestmark = pytest.mark.broker
USER = "terra-admin"
PASSWORD = "Scram-Test-Pw-5d1e+/"
TAG = f"{TEST_BROKER_TAG}-sasl-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(
        free_port(),
        tmp_path_factory.mktemp("sasl-broker"),
        BrokerConfig().kafka_version,
        heap="512m",
        controller_port=free_port(),
        tag=TAG,
        scram_user=ScramUser(USER, Secret(PASSWORD)),
    )
    broker.start(timeout_s=120)
    try:
        yield broker
    finally:
        broker.stop()
    assert broker.pid() is None and not port_open(broker.port)
    left = subprocess.run(["pgrep", "-f", TAG], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", f"a broker was left running: {left.stdout}"


@pytest.fixture(scope="module")
def kafka(node: EmbeddedBroker) -> KafkaConfig:
    """The client config as an operator writes it: a file, and the password in the environment."""
    env = {
        "TERRA_XFER_KAFKA_BOOTSTRAP_SERVERS": node.bootstrap,
        "TERRA_XFER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "TERRA_XFER_KAFKA_SASL_USERNAME": USER,
        "TERRA_XFER_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    return load(env=env).kafka


def new_topic(kafka: KafkaConfig, partitions: int = 1) -> str:
    name = f"sasl-{uuid.uuid4().hex[:10]}"
    admin = AdminClient(client_config(kafka))
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    return name


def test_the_right_credentials_produce_and_consume(kafka: KafkaConfig) -> None:
    assert check_access(kafka) == 1
    topic = new_topic(kafka, partitions=2)
    producer = Producer(client_config(kafka))
    for i in range(10):
        producer.produce(topic, value=b"event %d" % i, key=b"k%d" % i)
    assert producer.flush(30) == 0
    consumer = make_consumer(kafka, f"sasl-group-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        for _ in range(120):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value() or b"")
            if len(got) == 10:
                break
    finally:
        consumer.close()
    assert sorted(got) == sorted(b"event %d" % i for i in range(10))


def test_a_transactional_producer_commits_and_aborts(kafka: KafkaConfig) -> None:
    topic = new_topic(kafka)
    producer = TxProducer(kafka, f"sasl-tx-{uuid.uuid4().hex[:6]}")
    with producer.transaction():
        for i in range(3):
            producer.produce(topic, b"committed %d" % i, b"k")
    with pytest.raises(RuntimeError), producer.transaction():
        producer.produce(topic, b"aborted", b"k")
        raise RuntimeError("abort this one")
    producer.close()
    values = [m.value() for m in read_to_end(kafka, topic, timeout_s=30)]
    assert values == [b"committed 0", b"committed 1", b"committed 2"]


def test_a_client_without_credentials_is_refused(kafka: KafkaConfig) -> None:
    anonymous = KafkaConfig(bootstrap_servers=kafka.bootstrap_servers)
    with pytest.raises(KafkaAuthError, match="requires authentication"):
        check_access(anonymous, timeout_s=10)


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
def test_wrong_credentials_are_refused_by_name(kafka: KafkaConfig, who: str) -> None:
    if who == "wrong password":
        wrong = dataclasses.replace(kafka, sasl_password=Secret("not-the-password"))
        user = USER
    else:
        wrong = dataclasses.replace(kafka, sasl_username="mallory")
        user = "mallory"
    with pytest.raises(KafkaAuthError, match=f"refused the credentials of user '{user}'") as info:
        check_access(wrong, timeout_s=10)
    assert PASSWORD not in str(info.value) and "not-the-password" not in str(info.value)


def test_the_password_stays_out_of_the_broker_log_and_is_owner_only_on_disk(
    node: EmbeddedBroker,
) -> None:
    assert node.status().answering
    assert PASSWORD not in node.logfile.read_text(errors="replace")
    config_file = Path(node.data_dir) / "server.properties"
    assert PASSWORD in config_file.read_text()  # the broker's own JAAS login needs it
    assert os.stat(config_file).st_mode & 0o077 == 0


def test_a_stage_with_a_wrong_password_stops_at_once_saying_why(
    kafka: KafkaConfig, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "TERRA_XFER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TERRA_XFER_KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
        "TERRA_XFER_KAFKA_SASL_MECHANISM": str(kafka.sasl_mechanism),
        "TERRA_XFER_KAFKA_SASL_USERNAME": USER,
        "TERRA_XFER_KAFKA_SASL_PASSWORD": "not-the-password",
        "TERRA_XFER_METRICS_PORT": "0",
        "TERRA_XFER_STATUS_INDEX_PATH": str(tmp_path / "index.sqlite"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "terra_xfer", "--log-plain", "state-keeper", "--idle-exit", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "refused" in done.stderr and "not-the-password" not in done.stderr


def test_kafka_console_tools_get_the_credentials_from_the_config(
    kafka: KafkaConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat
    import tempfile

    from terra_xfer import kafka_tools

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[tuple[int, str]] = []
    run_tool = kafka_tools.run_tool

    def watched(version: str, tool: str, args: list[str], *rest: object) -> object:
        props = Path(args[args.index("--command-config") + 1])
        seen.append((stat.S_IMODE(props.stat().st_mode), props.read_text()))
        return run_tool(version, tool, args, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(kafka_tools, "run_tool", watched)
    topic = new_topic(kafka)
    done = kafka_tools.run_configured(
        kafka, BrokerConfig().kafka_version, "topics", ["--list"], 120, True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert topic in done.stdout.split()
    [(mode, text)] = seen
    assert mode == 0o600 and "SCRAM-SHA-512" in text
    assert list(tmp_path.iterdir()) == []  # the file with the password is gone
