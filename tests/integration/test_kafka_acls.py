"""Every stage does its whole job as its own Kafka user, under exactly the ACLs its KafkaUser gives,
and nothing more: the manifests' users on a broker that enforces them.

This module starts its own broker (free ports, its own data directory): SASL/SCRAM-SHA-512 with
Kafka's StandardAuthorizer and no access without an ACL, as Strimzi runs the cluster with
``authorization: simple``. Each KafkaUser of deploy/k8s (base/users.yaml and the Danforth
component) is created there as the User Operator creates it: a SCRAM credential and one ACL
binding per operation of each rule. A night of gantry files then goes through every stage of the
base, each built by the registry with its own user's credentials, to DONE; the sweeper ships a
file nobody logged and measures every group's lag; the Danforth producer ships snapshots (with
PostgreSQL). The refusals at the end show the ACLs are enforced: a user cannot write a topic, use
a transactional id or read a topic its rules do not name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from consumers.state.indexer import Indexer
from producers.checkpoints import last_checkpoint
from producers.danforth.service import DanforthProducer
from producers.gantry.night import uploads, write_upload
from terra_xfer import k8s
from terra_xfer.broker import EmbeddedBroker, free_port, port_open
from terra_xfer.broker_scram import ScramUser
from terra_xfer.config import BrokerConfig, Config, KafkaConfig, Secret
from terra_xfer.kafka import client_config, make_consumer
from terra_xfer.lag import publish_lag
from terra_xfer.stages import registry
from terra_xfer.stages.spec import StageSpec, Wiring
from terra_xfer.topics import CATALOGUE, DEADLETTER, create_topics
from tests.broker_tag import TEST_BROKER_TAG
from tests.kafka_read import read_all
from tests.lemnatec import danforth_config, new_site
from tests.pipeline import START, Stepping, drain, file_states, gantry_config, write_night
from tests.postgres import PostgresServer

pytestmark = pytest.mark.broker
log = logging.getLogger(__name__)
ADMIN = "terra-acl-admin"
ADMIN_PASSWORD = "Acl-Admin-Pw-7c2e+/"
TAG = f"{TEST_BROKER_TAG}-acls-{uuid.uuid4().hex[:8]}"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
USER_FILES = (DEPLOY / "base" / "users.yaml", DEPLOY / "components" / "danforth" / "danforth.yaml")
RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactionalId": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.BROKER,
}
PATTERN = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}
OPERATION = {
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Create": AclOperation.CREATE,
    "Delete": AclOperation.DELETE,
    "Alter": AclOperation.ALTER,
    "Describe": AclOperation.DESCRIBE,
    "ClusterAction": AclOperation.CLUSTER_ACTION,
    "AlterConfigs": AclOperation.ALTER_CONFIGS,
    "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
    "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE,
    "All": AclOperation.ALL,
}


def kafka_users() -> list[dict[str, Any]]:
    """The KafkaUser resources as committed (what the User Operator would be given)."""
    return [
        d
        for path in USER_FILES
        for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if d and d["kind"] == "KafkaUser"
    ]


def bindings(user: dict[str, Any]) -> list[AclBinding]:
    """The user's ACL rules as Kafka ACL bindings: one per operation, as the User Operator makes
    them (allow, any host unless the rule names one)."""
    principal = f"User:{user['metadata']['name']}"
    out = []
    for rule in user["spec"]["authorization"]["acls"]:
        resource = rule["resource"]
        allow = rule.get("type", "allow") == "allow"
        for op in rule["operations"]:
            out.append(
                AclBinding(
                    RESOURCE[resource["type"]],
                    resource.get("name", "kafka-cluster"),
                    PATTERN[resource.get("patternType", "literal")],
                    principal,
                    rule.get("host", "*"),
                    OPERATION[op],
                    AclPermissionType.ALLOW if allow else AclPermissionType.DENY,
                )
            )
    return out


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(
        free_port(),
        tmp_path_factory.mktemp("acl-broker"),
        BrokerConfig().kafka_version,
        heap="512m",
        controller_port=free_port(),
        tag=TAG,
        scram_user=ScramUser(ADMIN, Secret(ADMIN_PASSWORD)),
        extra_properties={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The node's own requests to its controller come over the PLAINTEXT controller
            # listener on loopback, as ANONYMOUS; clients only reach the SASL listener.
            "super.users": f"User:{ADMIN};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        },
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
def passwords(node: EmbeddedBroker) -> dict[str, str]:
    """Each KafkaUser created on the node: its SCRAM credential and its ACLs; name → password."""
    admin = AdminClient(client_config(node.kafka_config()))
    users = kafka_users()
    made = {u["metadata"]["name"]: f"pw-{uuid.uuid4().hex}" for u in users}
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(n, info, p.encode()) for n, p in made.items()
    ]
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(timeout=30)
    acls = [b for u in users for b in bindings(u)]
    for future in admin.create_acls(acls).values():
        future.result(timeout=30)
    return made


def as_user(config: Config, name: str, passwords: dict[str, str], instance: str) -> Config:
    """``config`` logging in as the KafkaUser ``name``, as the Deployment's environment does."""
    kafka = dataclasses.replace(
        config.kafka,
        sasl_username=name,
        sasl_password=Secret(passwords[name]),
        instance_id=instance,
    )
    return dataclasses.replace(config, kafka=kafka)


@pytest.fixture
def site_config(node: EmbeddedBroker, tmp_path: Path) -> Config:
    """The pipeline on the node with the manifests' topic names (the ACLs name them), logged in
    as the administrator; each stage gets its own user with :func:`as_user`."""
    base = Config()
    kafka = node.kafka_config(topic_prefix=KafkaConfig.topic_prefix, partitions=3)
    config = dataclasses.replace(
        base,
        kafka=kafka,
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
    create_topics(config)
    return gantry_config(config, max_files=10)


def unlogged_file(config: Config) -> str:
    """A whitelisted file in the cache that no log names, old enough for the sweeper: only the
    sweeper can ship it. Returns its key."""
    (upload,) = [u for u in uploads(START - timedelta(days=30), 40, seed=77) if u.whitelisted][:1]
    write_upload(config.gantry.cache_root, upload, random.Random(3))
    return f"{config.gantry.site}/{upload.rel}"


@contextlib.contextmanager
def stages_as_their_users(
    config: Config, passwords: dict[str, str], names: list[str]
) -> Iterator[list[Any]]:
    """The registry's stages ``names``, each built as the host builds it, logged in as its own
    KafkaUser (``terra-xfer-<stage>``, instance ``<stage>-0``)."""
    with contextlib.ExitStack() as held:
        stages = []
        for name in names:
            spec = registry.spec(name)
            own = as_user(config, f"terra-xfer-{name}", passwords, f"{name}-0")
            stage = spec.build(Wiring(own, spec, held))
            held.callback(stage.close)
            stages.append(stage)
        yield stages


def test_every_stage_does_its_work_under_its_own_acls(
    site_config: Config, passwords: dict[str, str]
) -> None:
    config = site_config
    names = [s.name for s in registry.deployed()]
    assert set(names) == {
        "gantry",
        "batcher",
        "monitor",
        "state-keeper",
        "ingest",
        "deleter",
        "sweeper",
        "indexer",
    }
    keys = {f"{config.gantry.site}/{rel}" for rel in write_night(config, 30, seed=11)}
    keys.add(unlogged_file(config))
    with config.gantry.xferlog.open("ab") as xferlog:  # the gantry dead-letters it
        xferlog.write(b"this is not an xferlog line\n")

    def all_done() -> bool:
        states = file_states(config)
        return all(states.get(k) == "DONE" for k in keys)

    with stages_as_their_users(config, passwords, names) as stages:
        with Stepping(stages, names) as running:
            reached = running.wait(all_done, timeout_s=240)
        states = file_states(config)
        assert reached, {k: states.get(k) for k in keys if states.get(k) != "DONE"}
        # The indexer, as its user, has every file in the status index as files.state has it.
        (indexer,) = [s for s in stages if isinstance(s, Indexer)]
        deadline = time.monotonic() + 60
        while {k: indexed(indexer, k) for k in states} != states:
            assert time.monotonic() < deadline, "the indexer did not follow files.state"
            indexer.step()
    letters = [v for _, v in read_all(config.kafka, config.topic(DEADLETTER))]
    assert any(v["source"].startswith("gantry") for v in letters), letters

    # The sweeper measures every group's lag as its user: committed offsets, the members, and,
    # where a group is behind (here: one record the stages, now stopped, never read), the oldest
    # unconsumed record, read in lag.py's probe group.
    behind = Producer(client_config(config.kafka))
    behind.produce(config.topic("files.transferred"), key=b"lag", value=None, partition=0)
    assert behind.flush(30) == 0
    sweeper = as_user(config, "terra-xfer-sweeper", passwords, "sweeper-0")
    consuming = list(registry.consumers())
    rows = publish_lag(sweeper, consuming)
    assert {r.group for r in rows} == {s.consumer_group(config) for s in consuming}
    readers = {s.consumer_group(config) for s in consuming if "files.transferred" in s.inputs}
    probed = [r for r in rows if r.topic == config.topic("files.transferred") and r.partition == 0]
    assert {r.group for r in probed} == readers and len(readers) >= 2
    assert all(r.lag > 0 and r.lag_seconds > 0 for r in probed), probed  # the probe read it


def test_every_stage_may_dead_letter_as_the_registry_says(
    site_config: Config, passwords: dict[str, str]
) -> None:
    """A dead letter is rare; each stage that may send one can commit one transactionally under
    its own transactional id prefix (the sweeper, which sends none, cannot)."""
    config = site_config
    for spec in registry.deployed() + registry.deployed("danforth"):
        own = as_user(config, f"terra-xfer-{spec.name}", passwords, f"{spec.name}-0")
        txn = k8s.transactional_id_prefix(spec) + "acl-check"
        error = commit_one(own.kafka, txn, config.topic(DEADLETTER))
        if DEADLETTER in spec.outputs:
            assert error is None, (spec.name, error)
        else:
            assert error == refused_write(spec), (spec.name, error)


def refused_write(spec: StageSpec) -> int:
    """How Kafka refuses a stage's write to a topic not among its outputs: the topic, or, for a
    stage that writes nothing (the indexer), its transactional id already."""
    if spec.outputs:
        return KafkaError.TOPIC_AUTHORIZATION_FAILED
    return KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def indexed(indexer: Indexer, key: str) -> str | None:
    row = indexer.view.index.summary(key)
    return None if row is None else row.state


def commit_one(kafka: KafkaConfig, transactional_id: str, topic: str) -> int | None:
    """Commit one record to ``topic`` in a transaction: None, or the Kafka error that refused it
    (the record's own when it has one: a refused commit only says the transaction failed)."""
    delivery: list[int] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            delivery.append(err.code())

    producer = Producer(
        client_config(
            kafka,
            **{"transactional.id": transactional_id, "transaction.timeout.ms": 10_000},
        )
    )
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        # A null value: the readers of the topic skip it.
        producer.produce(topic, key=b"acl-check", value=None, on_delivery=delivered)
        producer.commit_transaction(30)
        return None
    except KafkaException as exc:
        with contextlib.suppress(KafkaException):  # a fatal producer raises again on poll
            producer.poll(0)
        log.info("%s on %s refused: %s (deliveries: %s)", transactional_id, topic, exc, delivery)
        # The broker's refusal is in the exception or, when the commit only says a delivery
        # failed, in the record's delivery report (the other reports say it was purged).
        refused = [c for c in delivery if c > 0]
        code: int = refused[0] if refused else exc.args[0].code()
        return code


def test_a_user_is_refused_what_its_rules_do_not_name(
    site_config: Config, passwords: dict[str, str]
) -> None:
    """Enforced, not merely configured: writing a topic, using a transactional id or reading a
    topic outside the user's rules fails with Kafka's authorization errors."""
    config = site_config
    batcher = as_user(config, "terra-xfer-batcher", passwords, "batcher-0")
    state = config.topic("files.state")
    assert commit_one(batcher.kafka, "terra.batcher-x", state) == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    )
    assert commit_one(batcher.kafka, "terra.state-keeper-x", config.topic("files.arrived")) == (
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    )
    ingest = as_user(config, "terra-xfer-ingest", passwords, "ingest-0")
    group = config.group("ingest")
    assert read_error(ingest.kafka, config.topic("files.transferred"), group) is None
    assert read_error(ingest.kafka, config.topic("files.arrived"), group) == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    )
    # The throwaway reader groups are the producers' and the views' only.
    reader = f"{k8s.READER_GROUP}{uuid.uuid4().hex[:8]}"
    assert group_error(ingest.kafka, config.topic("files.transferred"), reader) == (
        KafkaError.GROUP_AUTHORIZATION_FAILED
    )
    # Every topic a user may not touch stays out of its reach for writing.
    for user in kafka_users():
        name = user["metadata"]["name"]
        spec = registry.spec(name.removeprefix("terra-xfer-"))
        own = as_user(config, name, passwords, f"{spec.name}-0")
        outside = [t for t in CATALOGUE if t.name not in spec.outputs]
        txn = k8s.transactional_id_prefix(spec) + "acl-refusal"
        assert commit_one(own.kafka, txn, config.topic(outside[0].name)) == refused_write(spec), (
            name
        )


def read_error(kafka: KafkaConfig, topic: str, group: str) -> int | None:
    """Read one partition of ``topic`` from its start, in ``group`` without joining it (as the
    stages' readers do): Kafka's error code, or None when the read is allowed."""
    consumer = make_consumer(kafka, group, {"enable.partition.eof": True})
    try:
        described = consumer.list_topics(topic, timeout=10).topics[topic]
        if described.error is not None:  # not even Describe: the metadata says why
            return int(described.error.code())
        consumer.assign([TopicPartition(topic, 0, 0)])
        for _ in range(40):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is None or err.code() == KafkaError._PARTITION_EOF:
                return None
            return int(err.code())
        raise AssertionError(f"no answer reading {topic}")
    finally:
        consumer.close()


def group_error(kafka: KafkaConfig, topic: str, group: str, within_s: float = 30.0) -> int | None:
    """The first error a reader in ``group`` is told within ``within_s`` (data and partition ends
    skipped): a group it may not use is refused when its coordinator is looked up, which may
    come after the partition's first messages."""
    consumer = make_consumer(kafka, group, {"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            err = None if msg is None else msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                return int(err.code())
        return None
    finally:
        consumer.close()


@pytest.mark.postgres
def test_the_danforth_producer_ships_under_its_own_acls(
    site_config: Config,
    passwords: dict[str, str],
    postgres: PostgresServer,
    tmp_path: Path,
    unique: Callable[[str], str],
) -> None:
    admin = danforth_config(site_config, postgres, unique("lt").replace("-", "_"), tmp_path)
    site = new_site(postgres, admin)
    try:
        planned = site.add(3, spoil={(1, 0): "missing"})
        own = as_user(admin, "terra-xfer-danforth", passwords, "danforth-0")
        producer = DanforthProducer(own, registry.spec("danforth"))
        try:
            drain(producer)
        finally:
            producer.close()
        source = f"danforth:{site.database}"
        stored = last_checkpoint(own, source)  # read back as the producer does at start
    finally:
        site.close()
    assert stored is not None and stored["position"]["last_id"] == planned[-1].id
    arrived = [v for _, v in read_all(admin.kafka, admin.topic("files.arrived"))]
    shipped = Counter(v["key"] for v in arrived if v["source"] == "DANFORTH")
    assert shipped == Counter(f"danforth/{path}" for p in planned for path in p.files())
    letters = [v for _, v in read_all(admin.kafka, admin.topic(DEADLETTER))]
    assert any(v["source"] == "danforth" for v in letters)
