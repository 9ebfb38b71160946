"""Kubernetes manifests made from the project's own tables, so the cluster never drifts from the code.

``topics`` turns the topic catalogue (:mod:`terra_xfer.topics`) into Strimzi ``KafkaTopic``
resources; ``stages`` turns the stage registry (:mod:`terra_xfer.stages.registry`) into one
``Deployment`` per pipeline stage, all with the same probes, security context and grace period,
and ``scaling`` a KEDA ``ScaledObject`` per stage that scales;
``danforth`` makes the Deployment of the Danforth producer, which lives in the optional component
``deploy/k8s/components/danforth`` because only a site with a LemnaTec system runs it. The output is
deterministic (fixed key order, sorted configs), so ``--check DIR`` can compare it byte for byte
with the committed files (``DIR/topics.yaml``, ``DIR/stages.yaml`` and, beside DIR,
``components/danforth/danforth.yaml``) and fail when someone changed one side only.

    python -m terra_xfer.k8s topics > deploy/k8s/base/topics.yaml
    python -m terra_xfer.k8s stages > deploy/k8s/base/stages.yaml
    python -m terra_xfer.k8s scaling > deploy/k8s/base/scaling.yaml
    python -m terra_xfer.k8s danforth > deploy/k8s/components/danforth/danforth.yaml
    python -m terra_xfer.k8s --check deploy/k8s/base
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from terra_xfer.config import KafkaConfig
from terra_xfer.stages import registry
from terra_xfer.stages.spec import Deployment, StageSpec
from terra_xfer.topics import CATALOGUE

CLUSTER = "terra"
BOOTSTRAP = f"{CLUSTER}-kafka-bootstrap:9092"  # the Strimzi cluster's bootstrap Service
IMAGE = "ghcr.io/terra-ref/terra-xfer:0.1.0"
METRICS_PORT = 9100
CONFIG_DIR = "/etc/terra-xfer"
CONFIG_FILE = "terra-xfer.toml"
STATE_DIR = "/var/lib/terra-xfer"
RUN_AS = 10001
# Above the stages' 10 s shutdown budget: finish the batch, flush, commit, close.
GRACE_S = 30
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
            "apiVersion": "kafka.strimzi.io/v1beta2",
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


def deployment(stage: StageSpec) -> dict[str, Any]:
    """The Deployment of one stage: non-root, read-only root, probes on the metrics port."""
    needs = _needs(stage)
    spec: dict[str, Any] = {"replicas": 1, "selector": {"matchLabels": _labels(stage)}}
    if needs.single:
        if needs.scaling is not None:
            raise ValueError(f"stage {stage.name} is single: it cannot scale")
        spec["strategy"] = {"type": "Recreate"}
    spec["template"] = {
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
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"terra-xfer-{stage.name}", "labels": _labels(stage)},
        "spec": spec,
    }


def _labels(stage: StageSpec) -> dict[str, str]:
    # A fresh dict on every call: shared objects would be written as YAML aliases (&id001).
    return {"app.kubernetes.io/name": "terra-xfer", "app.kubernetes.io/component": stage.name}


def _container(stage: StageSpec) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "TERRA_XFER_CONFIG", "value": f"{CONFIG_DIR}/{CONFIG_FILE}"},
        {"name": "TERRA_XFER_METRICS_PORT", "value": str(METRICS_PORT)},
        # Each replica's own name in its group and transactional id: its pod's.
        {
            "name": "TERRA_XFER_INSTANCE_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        },
    ]
    env += [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for var, secret, key in _needs(stage).secrets
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
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
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        # Working copies only (state views, task records): rebuilt from Kafka after a restart.
        {"name": "state", "emptyDir": {"sizeLimit": "2Gi"}},
    ]
    claims = sorted({m.claim for m in _needs(stage).mounts})
    volumes += [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]
    return volumes


def scaled_object(stage: StageSpec, partitions: int = KafkaConfig.partitions) -> dict[str, Any]:
    """KEDA's ScaledObject of a stage: 1 to ``partitions`` replicas (a group uses at most one
    member per partition), one trigger per input topic (KEDA follows the largest)."""
    scaling = _needs(stage).scaling
    assert scaling is not None and stage.group is not None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": f"terra-xfer-{stage.name}", "labels": _labels(stage)},
        "spec": {
            "scaleTargetRef": {"name": f"terra-xfer-{stage.name}"},
            # One member stays in every group (an empty group raises TerraXferGroupHasNoMembers).
            "minReplicaCount": 1,
            "maxReplicaCount": partitions,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "kafka",
                    "metadata": {
                        "bootstrapServers": BOOTSTRAP,
                        "consumerGroup": KafkaConfig.topic_prefix + stage.group,
                        "topic": KafkaConfig.topic_prefix + topic,
                        "lagThreshold": str(scaling.lag_threshold),
                        "activationLagThreshold": "0",
                        "offsetResetPolicy": "earliest",
                        "allowIdleConsumers": "false",
                    },
                }
                for topic in stage.inputs
            ],
        },
    }


KINDS = ("topics", "stages", "scaling", "danforth")


def render(kind: str) -> str:
    """The YAML text of ``topics``, ``stages`` or ``danforth``, exactly as committed."""
    if kind == "topics":
        docs = kafka_topics()
    elif kind == "stages":
        docs = [deployment(s) for s in registry.deployed()]
    elif kind == "scaling":
        docs = [scaled_object(s) for s in registry.deployed() if _needs(s).scaling is not None]
    elif kind == "danforth":
        docs = [deployment(s) for s in registry.deployed("danforth")]
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
