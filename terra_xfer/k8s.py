"""Kubernetes manifests made from the project's own tables, so the cluster never drifts from the code.

``topics`` turns the topic catalogue (:mod:`terra_xfer.topics`) into Strimzi ``KafkaTopic``
resources; ``stages`` turns the stage registry (:mod:`terra_xfer.stages.registry`) into one
``Deployment`` per pipeline stage, or a ``StatefulSet`` for a stage that keeps a local copy of
files.state (:func:`workload`), all with the same probes, security context and grace period;
``users`` makes a Strimzi ``KafkaUser`` per stage (SCRAM-SHA-512, with ACLs for exactly the
topics, group and transactional ids the stage uses: :func:`kafka_acls`), and ``scaling`` a KEDA
``ScaledObject`` per stage that scales, with the ``TriggerAuthentication`` that logs KEDA in as
that stage's user; ``danforth`` makes the Deployment and KafkaUser of the Danforth producer, which
live in the optional component ``deploy/k8s/components/danforth`` because only a site with a
LemnaTec system runs it. The output is deterministic (fixed key order, sorted configs), so
``--check DIR`` can compare it byte for byte with the committed files (``DIR/topics.yaml``,
``DIR/stages.yaml``, ``DIR/users.yaml``, ``DIR/scaling.yaml`` and, beside DIR,
``components/danforth/danforth.yaml``) and fail when someone changed one side only.

    python -m terra_xfer.k8s topics > deploy/k8s/base/topics.yaml
    python -m terra_xfer.k8s stages > deploy/k8s/base/stages.yaml
    python -m terra_xfer.k8s users > deploy/k8s/base/users.yaml
    python -m terra_xfer.k8s scaling > deploy/k8s/base/scaling.yaml
    python -m terra_xfer.k8s danforth > deploy/k8s/components/danforth/danforth.yaml
    python -m terra_xfer.k8s --check deploy/k8s/base
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from terra_xfer.config import ENV_PREFIX, KafkaConfig, StatusConfig
from terra_xfer.kafka_security import PASSWORD_ENV
from terra_xfer.stages import registry
from terra_xfer.stages.spec import Deployment, StageSpec
from terra_xfer.topics import CATALOGUE, CHECKPOINTS, FILES_STATE

CLUSTER = "terra"
STRIMZI_API = "kafka.strimzi.io/v1"
# The cluster's only client listener: TLS, SCRAM-SHA-512 (deploy/k8s/base/kafka.yaml).
KAFKA_PORT = 9093
BOOTSTRAP = f"{CLUSTER}-kafka-bootstrap:{KAFKA_PORT}"  # the Strimzi cluster's bootstrap Service
# KEDA's operator connects from its own namespace, so it needs the Service's namespace in the name:
# each overlay replaces NAMESPACE with its own (kustomize replacements; never a valid namespace).
KEDA_BOOTSTRAP = f"{CLUSTER}-kafka-bootstrap.NAMESPACE.svc:{KAFKA_PORT}"
# The CA that signed the brokers' certificates: a Secret the Cluster Operator makes and renews.
CLUSTER_CA_SECRET = f"{CLUSTER}-cluster-ca-cert"
CLUSTER_CA_KEY = "ca.crt"
KAFKA_CA_DIR = "/etc/kafka-ca"  # [kafka] ssl_ca_location = KAFKA_CA_DIR/ca.crt
USERNAME_ENV = ENV_PREFIX + "KAFKA_SASL_USERNAME"
USER_PASSWORD_KEY = "password"  # in the Secret the User Operator makes for a SCRAM KafkaUser
# Groups the stages read in without joining (assign, never commit), each with a random suffix:
# terra_xfer/reading.py (a producer reading its checkpoints back) and consumers/state/view.py (a
# local view of files.state). Not under the topic prefix; only Describe is needed (FindCoordinator).
READER_GROUP = "terra-xfer-reader-"
VIEW_GROUP = "terra-xfer-state-view-"
# Stages that measure every group's lag (terra_xfer/lag.py, from the sweeper): they describe each
# consuming stage's group (committed offsets, members), read its inputs (the oldest unconsumed
# record) in lag.py's probe group (the topic prefix + LAG_PROBE; lag.py reads on when refused the
# group, but librdkafka then logs the refusal on every measurement).
MEASURES_LAG = frozenset({"sweeper"})
LAG_PROBE = "lag-probe"
IMAGE = "ghcr.io/terra-ref/terra-xfer:0.1.0"
METRICS_PORT = 9100
CONFIG_DIR = "/etc/terra-xfer"
CONFIG_FILE = "terra-xfer.toml"
STATE_DIR = "/var/lib/terra-xfer"
RUN_AS = 10001
# The headless Service of every stage's metrics (monitoring.yaml): the StatefulSets' own.
METRICS_SERVICE = "terra-xfer-metrics"
SEED_FROM = f"dns+http://{METRICS_SERVICE}:{METRICS_PORT}"
# Above the stages' 10 s shutdown budget: finish the batch, flush, commit, close.
GRACE_S = 30
# The site the state volumes are sized for: a busy gantry night (up to ~5 TB a day). A site with
# more files a day raises it here (or patches sizeLimit in its overlay); README, "Local state".
SITE_FILES_PER_DAY = 250_000
# The files the status index is sized for: TERRA-REF's gantry shipped tens of millions over its
# seasons. The claim can grow later where the storage class allows expansion (README, "Local state").
SITE_LIFETIME_FILES = 50_000_000
HISTORY_HEADROOM = 1.25  # the status index never prunes: its write-ahead log and free pages only
IN_FLIGHT_DAYS = 2
MIN_STATE_GI = 2
HEADER = "# Made by `python -m terra_xfer.k8s {kind}` from the stage registry; do not edit.\n"
DANFORTH_FILE = Path("components") / "danforth" / "danforth.yaml"  # beside the base directory


def kafka_topics(
    prefix: str = KafkaConfig.topic_prefix,
    partitions: int = KafkaConfig.partitions,
    replicas: int = 1,
    cluster: str = CLUSTER,
) -> list[dict[str, Any]]:
    """One Strimzi ``KafkaTopic`` per catalogue entry, with its partitions and configs."""
    return [
        {
            "apiVersion": STRIMZI_API,
            "kind": "KafkaTopic",
            "metadata": {"name": prefix + s.name, "labels": {"strimzi.io/cluster": cluster}},
            "spec": {
                "topicName": prefix + s.name,
                "partitions": s.partitions(partitions),
                "replicas": replicas,
                "config": {k: s.configs[k] for k in sorted(s.configs)},
            },
        }
        for s in CATALOGUE
    ]


def workload(stage: StageSpec) -> dict[str, Any]:
    """The stage's pods: non-root, read-only root, probes on the metrics port.

    A stage that keeps a local copy of files.state (the state keeper, the batcher, the sweeper,
    the indexer) is a StatefulSet whose replicas each own a PersistentVolumeClaim for it: a rolling update, an
    eviction or a move to another node finds the copy where the replica left it, and the replica's
    name (its instance id, hence its static group membership) is the same, so it gets its
    partitions back and reads only what files.state gained meanwhile. In a Deployment's emptyDir
    every new pod would rebuild its copy from the whole topic. Any other stage is a Deployment.
    """
    needs = _needs(stage)
    stateful = keeps_copy(stage)
    pods: dict[str, Any] = {"replicas": 1, "selector": {"matchLabels": _labels(stage)}}
    if needs.single and needs.scaling is not None:
        raise ValueError(f"stage {stage.name} is single: it cannot scale")
    if stateful:
        # Replicas start and stop together when KEDA scales; a replica is replaced only after it
        # is gone, so no two pods ever share a name, a claim or an instance id ("single" holds).
        pods["serviceName"] = METRICS_SERVICE
        pods["podManagementPolicy"] = "Parallel"
        pods["updateStrategy"] = {"type": "RollingUpdate"}
    elif needs.single:
        pods["strategy"] = {"type": "Recreate"}
    pods["template"] = {
        "metadata": {"labels": _labels(stage)},
        "spec": {
            "terminationGracePeriodSeconds": GRACE_S,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [_container(stage)],
            "volumes": _volumes(stage),
        },
    }
    if stateful:
        pods["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "state", "labels": _labels(stage)},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": f"{state_volume_gi(stage)}Gi"}},
                },
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": workload_kind(stage),
        "metadata": {"name": f"terra-xfer-{stage.name}", "labels": _labels(stage)},
        "spec": pods,
    }


def keeps_copy(stage: StageSpec) -> bool:
    """Whether the stage keeps a local copy of files.state (and so runs as a StatefulSet)."""
    return _needs(stage).copy_bytes_per_file > 0


def workload_kind(stage: StageSpec) -> str:
    return "StatefulSet" if keeps_copy(stage) else "Deployment"


def _labels(stage: StageSpec) -> dict[str, str]:
    # A fresh dict on every call: shared objects would be written as YAML aliases (&id001).
    return {"app.kubernetes.io/name": "terra-xfer", "app.kubernetes.io/component": stage.name}


def _container(stage: StageSpec) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "TERRA_XFER_CONFIG", "value": f"{CONFIG_DIR}/{CONFIG_FILE}"},
        {"name": "TERRA_XFER_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "TERRA_XFER_METRICS_ADDRESS", "value": "0.0.0.0"},  # the kubelet's probes
        # Each replica's own name in its group and transactional id: its pod's.
        {
            "name": "TERRA_XFER_INSTANCE_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        },
        # The stage's own Kafka user (kafka_user); its password is in the Secret the User Operator
        # makes under the user's name. Protocol, mechanism and CA are in terra-xfer.toml.
        {"name": USERNAME_ENV, "value": user_name(stage)},
        {
            "name": PASSWORD_ENV,
            "valueFrom": {"secretKeyRef": {"name": user_name(stage), "key": USER_PASSWORD_KEY}},
        },
    ]
    if keeps_copy(stage):
        # A replica whose claim is new (a scale event, a lost volume) seeds its copy from a ready
        # peer's (terra_xfer.seeding): every ready pod behind the metrics Service is asked, and
        # those of other stages answer 404.
        env.append({"name": "TERRA_XFER_STATUS_SEED_FROM", "value": SEED_FROM})
    env += [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for var, secret, key in _needs(stage).secrets
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "kafka-ca", "mountPath": KAFKA_CA_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "state", "mountPath": STATE_DIR},
    ]
    mounts += [
        {"name": m.claim, "mountPath": m.path, "readOnly": m.read_only}
        for m in _needs(stage).mounts
    ]
    size = _needs(stage).resources
    return {
        "name": stage.name,
        "image": IMAGE,
        "command": ["terra-xfer", *stage.argv],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "livenessProbe": _probe("/healthz", period_s=10, failures=3),
        "readinessProbe": _probe("/readyz", period_s=5, failures=2),
        "resources": {
            "requests": {"cpu": size.cpu_request, "memory": size.memory_request},
            "limits": {"cpu": size.cpu_limit, "memory": size.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }


def _needs(stage: StageSpec) -> Deployment:
    if stage.deployment is None:
        raise ValueError(f"stage {stage.name} has no Deployment")
    return stage.deployment


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "metrics"},
        "initialDelaySeconds": 5,
        "periodSeconds": period_s,
        "failureThreshold": failures,
    }


def _volumes(stage: StageSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": "terra-xfer-config"}},
        {
            "name": "kafka-ca",
            "secret": {
                "secretName": CLUSTER_CA_SECRET,
                "items": [{"key": CLUSTER_CA_KEY, "path": CLUSTER_CA_KEY}],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    if not keeps_copy(stage):  # a copy's volume is the StatefulSet's claim (workload)
        # Task records and small views only: rebuilt from Kafka after a restart.
        volumes.append({"name": "state", "emptyDir": {"sizeLimit": f"{state_volume_gi(stage)}Gi"}})
    claims = sorted({m.claim for m in _needs(stage).mounts})
    volumes += [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]
    return volumes


def state_volume_gi(
    stage: StageSpec,
    files_per_day: int = SITE_FILES_PER_DAY,
    retain_days: float = StatusConfig.retain_settled_days,
    lifetime_files: int = SITE_LIFETIME_FILES,
) -> int:
    """GiB of the stage's state volume: its local copy of files.state holds the files of the
    retention window and about two days in flight beyond it, at its measured bytes per file; twice
    that, since SQLite keeps the pages of pruned rows for reuse (it never shrinks the file) and its
    write-ahead log beside it; never less than ``MIN_STATE_GI`` (task records, small views). A copy
    that keeps every file (the status index) holds ``lifetime_files``, with a quarter more for its
    log and free pages."""
    needs = _needs(stage)
    per_file = needs.copy_bytes_per_file
    if needs.copy_keeps_history:
        need = per_file * lifetime_files * HISTORY_HEADROOM
    else:
        need = per_file * files_per_day * (retain_days + IN_FLIGHT_DAYS) * 2
    return max(MIN_STATE_GI, math.ceil(need / 2**30))


def scaled_object(stage: StageSpec, partitions: int = KafkaConfig.partitions) -> dict[str, Any]:
    """KEDA's ScaledObject of a stage: 1 to ``partitions`` replicas (a group uses at most one
    member per partition), one trigger per input topic (KEDA follows the largest), each logged in
    as the stage's own Kafka user over TLS (:func:`trigger_authentication`)."""
    scaling = _needs(stage).scaling
    assert scaling is not None and stage.group is not None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": f"terra-xfer-{stage.name}", "labels": _labels(stage)},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": workload_kind(stage),
                "name": f"terra-xfer-{stage.name}",
            },
            # One member stays in every group (an empty group raises TerraXferGroupHasNoMembers).
            "minReplicaCount": 1,
            "maxReplicaCount": partitions,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "kafka",
                    "authenticationRef": {"name": trigger_authentication_name(stage)},
                    "metadata": {
                        "bootstrapServers": KEDA_BOOTSTRAP,
                        "consumerGroup": KafkaConfig.topic_prefix + stage.group,
                        "topic": KafkaConfig.topic_prefix + topic,
                        "lagThreshold": str(scaling.lag_threshold),
                        "activationLagThreshold": "0",
                        "offsetResetPolicy": "earliest",
                        "allowIdleConsumers": "false",
                        "sasl": "scram_sha512",
                        "tls": "enable",
                    },
                }
                for topic in stage.inputs
            ],
        },
    }


def trigger_authentication_name(stage: StageSpec) -> str:
    return f"terra-xfer-{stage.name}-kafka"


def trigger_authentication(stage: StageSpec) -> dict[str, Any]:
    """KEDA's credentials for a stage's lag triggers: the stage's own Kafka user (whose ACLs let it
    describe its group and inputs, all the scaler asks): the user name from the stage container's
    environment, the password from the Secret the User Operator made, and the cluster CA."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": trigger_authentication_name(stage), "labels": _labels(stage)},
        "spec": {
            "env": [{"parameter": "username", "name": USERNAME_ENV, "containerName": stage.name}],
            "secretTargetRef": [
                {"parameter": "password", "name": user_name(stage), "key": USER_PASSWORD_KEY},
                {"parameter": "ca", "name": CLUSTER_CA_SECRET, "key": CLUSTER_CA_KEY},
            ],
        },
    }


def user_name(stage: StageSpec) -> str:
    """The stage's Kafka user, its KafkaUser and the Secret holding its password: one name."""
    return f"terra-xfer-{stage.name}"


def transactional_id_prefix(stage: StageSpec, prefix: str = KafkaConfig.topic_prefix) -> str:
    """What every transactional id of the stage starts with.

    A consuming stage's is ``<group>-<instance id>`` (terra_xfer/stages/commit.py: one per replica,
    the pod's name). A producer names its own after the stage and what it reads: ``terra.gantry-
    xferlog``, ``terra.danforth-<database>``, ``terra.sweeper``.
    """
    if stage.group is not None:
        return f"{prefix}{stage.group}-"
    return prefix + stage.name


def kafka_acls(stage: StageSpec, prefix: str = KafkaConfig.topic_prefix) -> list[dict[str, Any]]:
    """The ACL rules of the stage's KafkaUser: exactly what the stage does. Names are literal but
    where the code adds a per-replica or random suffix (transactional ids, throwaway groups).

    Topics: read its inputs, write its outputs (the dead-letter topic among them), as the registry
    says; a producer also reads its checkpoints back at start; a stage that keeps a copy of it (:func:`keeps_copy`) reads
    files.state; a stage in ``MEASURES_LAG`` reads every consuming stage's inputs and describes
    their groups. Groups: its own (Read: join, commit, send offsets in a transaction), the
    throwaway groups it reads in without joining (Describe, by prefix). Transactional ids: Write and
    Describe on its prefix (:func:`transactional_id_prefix`), for a stage that writes. No cluster rights: an idempotent or
    transactional producer needs none once it may write a transactional id.
    """
    reads = set(stage.inputs)
    writes = set(stage.outputs)
    groups: dict[tuple[str, str], set[str]] = {}
    if stage.group is not None:
        groups[(prefix + stage.group, "literal")] = {"Read"}
    if CHECKPOINTS in writes:
        reads.add(CHECKPOINTS)
        groups[(READER_GROUP, "prefix")] = {"Describe"}
    if stage.deployment is not None and keeps_copy(stage):
        reads.add(FILES_STATE)
        groups[(VIEW_GROUP, "prefix")] = {"Describe"}
    if stage.name in MEASURES_LAG:
        for measured in registry.consumers():
            assert measured.group is not None
            reads.update(measured.inputs)
            groups.setdefault((prefix + measured.group, "literal"), set()).add("Describe")
        groups[(prefix + LAG_PROBE, "literal")] = {"Describe"}
    rules = []
    for topic in sorted(reads | writes):
        ops = {"Describe"} | ({"Read"} if topic in reads else set())
        ops |= {"Write"} if topic in writes else set()
        rules.append(_acl("topic", prefix + topic, "literal", ops))
    for (group, pattern), ops in sorted(groups.items()):
        if "Read" in ops:
            ops = ops - {"Describe"}  # implied by Read
        rules.append(_acl("group", group, pattern, ops))
    if writes:  # a stage that writes nothing (the indexer) has no producer
        rules.append(
            _acl(
                "transactionalId",
                transactional_id_prefix(stage, prefix),
                "prefix",
                {"Write", "Describe"},
            )
        )
    return rules


def _acl(kind: str, name: str, pattern: str, ops: set[str]) -> dict[str, Any]:
    return {
        "resource": {"type": kind, "name": name, "patternType": pattern},
        "operations": sorted(ops),
    }


def kafka_user(stage: StageSpec, cluster: str = CLUSTER) -> dict[str, Any]:
    """The stage's Strimzi KafkaUser: SCRAM-SHA-512 (the User Operator makes its password and the
    Secret of the same name) with :func:`kafka_acls`."""
    return {
        "apiVersion": STRIMZI_API,
        "kind": "KafkaUser",
        "metadata": {
            "name": user_name(stage),
            "labels": {"strimzi.io/cluster": cluster, **_labels(stage)},
        },
        "spec": {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": kafka_acls(stage)},
        },
    }


KINDS = ("topics", "stages", "users", "scaling", "danforth")


def render(kind: str) -> str:
    """The YAML text of one of :data:`KINDS`, exactly as committed."""
    docs: list[dict[str, Any]]
    if kind == "topics":
        docs = kafka_topics()
    elif kind == "stages":
        docs = [workload(s) for s in registry.deployed()]
    elif kind == "users":
        docs = [kafka_user(s) for s in registry.deployed()]
    elif kind == "scaling":
        scaled = [s for s in registry.deployed() if _needs(s).scaling is not None]
        docs = [d for s in scaled for d in (trigger_authentication(s), scaled_object(s))]
    elif kind == "danforth":
        stages = registry.deployed("danforth")
        docs = [workload(s) for s in stages] + [kafka_user(s) for s in stages]
    else:
        raise ValueError(f"unknown manifest kind {kind!r}: {', '.join(KINDS)}")
    body = str(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=100))
    return HEADER.format(kind=kind) + body


def committed_path(directory: Path, kind: str) -> Path:
    """Where the manifests of ``kind`` are committed, for the base directory ``directory``."""
    if kind == "danforth":
        return directory.parent / DANFORTH_FILE
    return directory / f"{kind}.yaml"


def check(directory: Path) -> list[str]:
    """Names of the committed files (the base ``directory``'s and the Danforth component's) that
    differ from what :func:`render` makes."""
    stale = []
    for kind in KINDS:
        path = committed_path(directory, kind)
        if not path.is_file() or path.read_text(encoding="utf-8") != render(kind):
            stale.append(str(path))
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m terra_xfer.k8s", description=__doc__)
    parser.add_argument("kind", nargs="?", choices=KINDS)
    parser.add_argument("--check", type=Path, metavar="DIR", help="compare DIR's files instead")
    args = parser.parse_args(argv)
    if args.check is not None:
        stale = check(args.check)
        for path in stale:
            print(f"{path} differs from the catalogue; rewrite it with python -m terra_xfer.k8s")
        return 1 if stale else 0
    if args.kind is None:
        parser.error(f"name one of {', '.join(KINDS)}, or give --check DIR")
    sys.stdout.write(render(args.kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
