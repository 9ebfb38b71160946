"""The Kubernetes manifests under deploy/k8s agree with the code and with their operators' needs.

Checked without a cluster: topics against the catalogue, Deployments against the stages and the
house security rules, KEDA against partition counts and its Kafka credentials, alert expressions
against the exported metric names, Strimzi resources against the fields the operator requires, each
stage's KafkaUser against exactly the Kafka access the registry gives the stage, and the Secrets
against the rule that none is ever in the apply stream. The overlays are built with kustomize (or
``kubectl kustomize``) when one is installed; the image's build steps (wheel, clean install,
console script) run in the ``slow`` test at the end. The custom resources are validated against
the operators' own CRD schemas in test_k8s_crds.py; that the ACLs let every stage do its work (and
no more) against a real broker is tests/integration/test_kafka_acls.py.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from producers.danforth import service as danforth_service
from producers.danforth.lemnatec import database_name
from terra_xfer import k8s
from terra_xfer.cli import cli
from terra_xfer.config import ENV_PREFIX, Config, DanforthConfig, KafkaConfig, load
from terra_xfer.kafka_security import PASSWORD_ENV, security_settings
from terra_xfer.metrics import REGISTRY
from terra_xfer.stages import registry
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import CATALOGUE, CHECKPOINTS, DEADLETTER, FILES_STATE
from tests.fakes import UNREACHABLE

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
DANFORTH = ROOT / "deploy" / "k8s" / "components" / "danforth"
OVERLAY_NAMES = ("dev", "prod")
Doc = dict[str, Any]
Acl = tuple[str, str, str, str]  # resource type, name, pattern type, operation

EXPORTED = {
    "terra_xfer_files_total",
    "terra_xfer_bytes_total",
    "terra_xfer_dead_letters_total",
    "terra_xfer_batch_files",
    "terra_xfer_tasks",
    "terra_xfer_task_duration_seconds",
    "terra_xfer_oldest_untransferred_age_seconds",
    "terra_xfer_files_by_state",
    "terra_xfer_tailer_bytes_behind",
    "terra_xfer_cache_disk_used_ratio",
    "terra_xfer_consumer_lag_messages",
    "terra_xfer_consumer_lag_seconds",
    "terra_xfer_committed_offset",
    "terra_xfer_group_members",
    "terra_xfer_stage_retrying",
    "terra_xfer_stage_restarts_total",
    "terra_xfer_ingest_attempts_total",
    "terra_xfer_ingest_oldest_waiting_seconds",
}
DANFORTH_METRICS = {
    "terra_xfer_danforth_last_snapshot_id",
    "terra_xfer_danforth_snapshots_total",
    "terra_xfer_danforth_poll_errors_total",
}
HISTOGRAMS = {"terra_xfer_batch_files", "terra_xfer_task_duration_seconds"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def listed_docs(directory: Path) -> list[Doc]:
    """Every resource a kustomization (or component) lists, parsed, and the ConfigMaps its
    generators make from files (named as kustomize names them before any hash suffix)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[Doc] = []
    for name in kustomization["resources"]:
        text = (directory / name).read_text(encoding="utf-8")
        docs += [d for d in yaml.safe_load_all(text) if d]
    for generator in kustomization.get("configMapGenerator", []):
        data = {f: (directory / f).read_text(encoding="utf-8") for f in generator["files"]}
        meta = {"name": generator["name"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return docs


def cli_commands() -> set[str]:
    """Every ``terra-xfer`` subcommand, the stages' (made from the registry) among them."""
    return set(cli.list_commands(click.Context(cli)))


def base_docs() -> list[Doc]:
    """Every resource the base kustomization lists, parsed (the ConfigMap comes from a generator)."""
    return listed_docs(BASE)


def danforth_docs() -> list[Doc]:
    """Every resource the Danforth component adds (its deleter patch is not one)."""
    return listed_docs(DANFORTH)


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: list[Doc]) -> list[Doc]:
    """Every stage's pods: its Deployment, or its StatefulSet when it keeps a copy of files.state."""
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def site_config() -> Config:
    return load(BASE / "terra-xfer.toml", env={})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (histogram series folded to their family name)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function or aggregation, or an operator keyword
        family = re.sub(r"_(?:bucket|sum|count)$", "", word)
        names.add(family if family in HISTOGRAMS else word)
    return names


def assert_hardened(deployment: Doc) -> None:
    """Probes, resources, non-root and read-only, and a grace period above the 10 s budget."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 10, name
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["runAsUser"] != 0, name
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        port = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port["metrics"] == 9100, name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ("metrics", 9100), name
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TERRA_XFER_METRICS_ADDRESS"] == "0.0.0.0", name  # reachable by the kubelet
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][part]), name
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_metric_names_reads_only_metric_identifiers() -> None:
    expr = (
        'sum by (group, le) (rate(a_total{x="y{z}"}[5m] offset 1h)) > 0.85 and on (group) '
        "b_bucket or max(terra_xfer_batch_files_count) unless bool c"
    )
    assert metric_names(expr) == {"a_total", "b_bucket", "terra_xfer_batch_files", "c"}


def test_kafka_topics_match_the_catalogue() -> None:
    topics = of_kind(base_docs(), "KafkaTopic")
    assert topics == k8s.kafka_topics()
    config = site_config()
    by_name = {t["spec"]["topicName"]: t["spec"] for t in topics}
    assert set(by_name) == {config.topic(s.name) for s in CATALOGUE}
    for s in CATALOGUE:
        manifest = by_name[config.topic(s.name)]
        assert manifest["partitions"] == s.partitions(config.kafka.partitions)
        assert manifest["config"] == dict(s.configs)
        assert (manifest["config"]["cleanup.policy"] == "compact") == s.compacted


def test_committed_files_are_what_the_module_renders() -> None:
    assert k8s.check(BASE) == []
    assert k8s.main(["--check", str(BASE)]) == 0
    for kind in k8s.KINDS:
        assert k8s.render(kind) == k8s.render(kind)
        assert "&id" not in k8s.render(kind)
    assert (DANFORTH / "danforth.yaml").read_text(encoding="utf-8") == k8s.render("danforth")


def test_check_names_a_file_that_drifted(tmp_path: Path) -> None:
    base = tmp_path / "base"
    component = tmp_path / "components" / "danforth"
    base.mkdir()
    component.mkdir(parents=True)
    for name in ("topics.yaml", "stages.yaml", "users.yaml", "scaling.yaml"):
        shutil.copy(BASE / name, base / name)
    shutil.copy(DANFORTH / "danforth.yaml", component / "danforth.yaml")
    assert k8s.check(base) == []
    topics = base / "topics.yaml"
    topics.write_text(topics.read_text().replace("partitions: 6", "partitions: 12", 1))
    assert k8s.check(base) == [str(topics)]
    assert k8s.main(["--check", str(base)]) == 1
    (base / "stages.yaml").unlink()
    assert len(k8s.check(base)) == 2
    users = base / "users.yaml"
    users.write_text(users.read_text().replace("- Read\n", "- All\n", 1))
    assert len(k8s.check(base)) == 3
    danforth = component / "danforth.yaml"
    danforth.write_text(danforth.read_text().replace("replicas: 1", "replicas: 2", 1))
    assert k8s.check(base)[-1] == str(danforth)


def test_every_stage_has_a_hardened_deployment() -> None:
    deployments = workloads(base_docs())
    stages = {s.name for s in registry.deployed()}
    assert stages == {
        "gantry",
        "batcher",
        "monitor",
        "state-keeper",
        "ingest",
        "deleter",
        "sweeper",
        "indexer",
    }
    commands = {
        tuple(d["spec"]["template"]["spec"]["containers"][0]["command"]) for d in deployments
    }
    assert commands == {("terra-xfer", s) for s in stages}
    assert stages <= cli_commands()
    for deployment in deployments:
        assert_hardened(deployment)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "ghcr.io/terra-ref/terra-xfer:0.1.0"
        spec = registry.spec(container["command"][1])
        if spec.deployment is not None and spec.deployment.single:
            # Never two pods at once: Recreate, or a StatefulSet (a pod replaced once it is gone).
            assert deployment["kind"] == "StatefulSet" or deployment["spec"]["strategy"] == {
                "type": "Recreate"
            }, spec.name


def test_deployments_mount_config_secrets_and_claims_that_exist() -> None:
    docs = base_docs()
    secrets = provided_secrets(docs, "prod")
    claims = {c["metadata"]["name"] for c in of_kind(docs, "PersistentVolumeClaim")}
    config = site_config()
    mounted: dict[str, set[str]] = {}
    for deployment in workloads(docs):
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        config_path = Path(env["TERRA_XFER_CONFIG"]["value"])
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
        assert config_volume["configMap"]["name"] == "terra-xfer-config"
        assert mounts[str(config_path.parent)]["name"] == "config"
        # Each replica is named after its pod, so two replicas never share an instance id.
        pod_name = {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["TERRA_XFER_INSTANCE_ID"]["valueFrom"] == pod_name
        for var in env.values():
            if "valueFrom" in var and var["name"] != "TERRA_XFER_INSTANCE_ID":
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["key"] in secrets[ref["name"]], var["name"]
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "secret" in volume:
                wanted = {i["key"] for i in volume["secret"]["items"]}
                assert wanted <= secrets[volume["secret"]["secretName"]], volume["name"]
        stage = container["command"][1]
        mounted[stage] = {m["mountPath"] for m in container["volumeMounts"]}
        if stage == "deleter":
            assert mounts[str(config.gantry.cache_root)]["readOnly"] is False
    assert str(config.gantry.cache_root) in mounted["gantry"] & mounted["deleter"]
    assert str(config.gantry.xferlog.parent) in mounted["gantry"]
    assert str(config.status.index_path.parent) in mounted["state-keeper"]


def test_site_config_names_secrets_only_by_environment() -> None:
    text = (BASE / "terra-xfer.toml").read_text(encoding="utf-8")
    config = load(BASE / "terra-xfer.toml", env={})  # a secret in the file would raise ConfigError
    assert config.transfer.backend == "globus" and config.catalog.backend == "clowder"
    assert "REPLACE_WITH" not in text
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    generator = kustomization["configMapGenerator"][0]
    assert generator == {"name": "terra-xfer-config", "files": [k8s.CONFIG_FILE]}


def assert_scaling_fits_partitions(docs: list[Doc], config: Config, namespace: str) -> None:
    """KEDA scales every consuming stage within its partitions, on its own group's lag, logged in
    as the stage's own Kafka user (the TriggerAuthentication beside it) at the bootstrap Service
    the stages use, named in full with ``namespace``: KEDA connects from its own namespace."""
    deployments = {d["metadata"]["name"]: d for d in workloads(docs)}
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(docs, "KafkaTopic")
    }
    scaled = of_kind(docs, "ScaledObject")
    # Every consuming stage scales; the producers and the sweeper never do.
    consuming = {s.name for s in registry.consumers() if s.deployment is not None}
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {
        f"terra-xfer-{name}" for name in consuming
    }
    for scaled_object in scaled:
        target = scaled_object["spec"]["scaleTargetRef"]["name"]
        assert scaled_object["spec"]["scaleTargetRef"]["kind"] == deployments[target]["kind"]
        spec = registry.spec(target.removeprefix("terra-xfer-"))
        triggers = scaled_object["spec"]["triggers"]
        assert {t["metadata"]["topic"] for t in triggers} == {config.topic(t) for t in spec.inputs}
        for trigger in triggers:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            topic = meta["topic"]
            catalogue = next(s for s in CATALOGUE if config.topic(s.name) == topic)
            limit = min(catalogue.partitions(config.kafka.partitions), partitions[topic])
            assert scaled_object["spec"]["minReplicaCount"] >= 1
            assert scaled_object["spec"]["maxReplicaCount"] <= limit
            assert meta["consumerGroup"] == spec.consumer_group(config)
            host, port = config.kafka.bootstrap_servers.split(":")
            assert meta["bootstrapServers"] == f"{host}.{namespace}.svc:{port}"
            assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
            assert_keda_logs_in_as_the_stage(docs, scaled_object, trigger)
        strategy = deployments[target]["spec"].get("strategy", {})
        assert strategy.get("type") != "Recreate", f"{target} scales: it rolls with overlap"


def assert_keda_logs_in_as_the_stage(docs: list[Doc], scaled: Doc, trigger: Doc) -> None:
    """The trigger's TriggerAuthentication exists and gives KEDA the stage's own credentials: the
    user name its container logs in with, the password from that user's Secret (the User
    Operator's, named after the KafkaUser) and the cluster CA the stages trust."""
    ref = trigger["authenticationRef"]
    assert ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
    auth = named(docs, "TriggerAuthentication", ref["name"])["spec"]
    target = named(
        docs, scaled["spec"]["scaleTargetRef"]["kind"], scaled["spec"]["scaleTargetRef"]["name"]
    )
    (container,) = target["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    (username,) = auth["env"]
    assert username["parameter"] == "username" and username["containerName"] == container["name"]
    user = env[username["name"]]["value"]
    kafka_user = named(docs, "KafkaUser", user)
    assert kafka_user["spec"]["authentication"] == {"type": "scram-sha-512"}
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
    assert refs == {"password": (user, "password"), "ca": (k8s.CLUSTER_CA_SECRET, "ca.crt")}
    secret_ref = env[PASSWORD_ENV]["valueFrom"]["secretKeyRef"]
    assert (secret_ref["name"], secret_ref["key"]) == refs["password"]
    # KEDA asks for the group's committed offsets and the input's end offsets: Describe on both,
    # which the stage's Read implies.
    rules = acl_tuples(kafka_user)
    assert ("group", trigger["metadata"]["consumerGroup"], "literal", "Read") in rules
    assert ("topic", trigger["metadata"]["topic"], "literal", "Read") in rules


def test_keda_never_scales_past_the_partitions() -> None:
    assert_scaling_fits_partitions(base_docs(), site_config(), "NAMESPACE")


def test_scaled_objects_use_their_trigger_authentication() -> None:
    """Every Kafka trigger names a TriggerAuthentication, and every TriggerAuthentication is used:
    without one KEDA would reach a SCRAM listener with no credentials and never scale."""
    docs = base_docs()
    auths = {a["metadata"]["name"] for a in of_kind(docs, "TriggerAuthentication")}
    used = set()
    for scaled in of_kind(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            used.add(trigger["authenticationRef"]["name"])
    assert used == auths
    broken = of_kind(docs, "ScaledObject")[0]
    del broken["spec"]["triggers"][0]["authenticationRef"]
    with pytest.raises(KeyError):
        assert_scaling_fits_partitions(docs, site_config(), "NAMESPACE")


def test_alerts_read_only_exported_metrics_and_cover_the_failures() -> None:
    (rule,) = of_kind(base_docs(), "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    used: set[str] = set()
    for r in rules:
        names = metric_names(r["expr"])
        assert names and names <= EXPORTED, (r["alert"], names - EXPORTED)
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"]
        used |= names
    assert {
        "terra_xfer_consumer_lag_seconds",
        "terra_xfer_consumer_lag_messages",
        "terra_xfer_committed_offset",
        "terra_xfer_group_members",
        "terra_xfer_oldest_untransferred_age_seconds",
        "terra_xfer_dead_letters_total",
        "terra_xfer_cache_disk_used_ratio",
        "terra_xfer_tasks",
        "terra_xfer_stage_retrying",
        "terra_xfer_stage_restarts_total",
    } <= used
    assert all(registered(name) for name in used)
    lag = next(r for r in rules if "terra_xfer_consumer_lag_seconds" in r["expr"])
    assert re.search(r">\s*900\b", lag["expr"])  # 15 minutes
    disk = next(r for r in rules if "terra_xfer_cache_disk_used_ratio" in r["expr"])
    assert re.search(r">\s*0\.85\b", disk["expr"])
    tasks = next(r for r in rules if "terra_xfer_tasks" in r["expr"])
    assert "FAILED" in tasks["expr"] and "INACTIVE" in tasks["expr"]


def test_service_monitor_scrapes_the_stages_metrics_port() -> None:
    docs = base_docs()
    (service,) = of_kind(docs, "Service")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    for deployment in workloads(docs + danforth_docs()):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def assert_danforth_deployed(docs: list[Doc], config: Config, overlay: str = "prod") -> None:
    """The Danforth producer as its operator needs it: one hardened, never-surging replica of
    ``terra-xfer danforth``, the database password only through a Secret, the cache read-write and
    the blob store read-only where the config says, and metrics the ServiceMonitor scrapes."""
    deployment = named(docs, "Deployment", "terra-xfer-danforth")
    assert_hardened(deployment)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "danforth" in cli_commands()
    assert registry.deployed("danforth") == [registry.spec("danforth")]
    assert registry.spec("danforth") not in registry.deployed()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["terra-xfer", "danforth"]
    env = {e["name"]: e for e in container["env"]}
    secret = DanforthConfig.__dataclass_fields__["password"].metadata["secret"]
    password = env[ENV_PREFIX + secret]
    assert set(password) == {"name", "valueFrom"}  # never a literal value
    ref = password["valueFrom"]["secretKeyRef"]
    assert ref["key"] in provided_secrets(docs, overlay)[ref["name"]]
    assert env["TERRA_XFER_METRICS_PORT"]["value"] == str(k8s.METRICS_PORT)
    (service,) = of_kind(docs, "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cache = mounts[str(config.danforth.cache_root)]
    blobs = mounts[str(config.danforth.blob_root)]
    assert cache["readOnly"] is False and blobs["readOnly"] is True
    for mount, mode in ((cache, "ReadWriteMany"), (blobs, "ReadOnlyMany")):
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert named(docs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == [mode]
    # One PNG thread per core: the limit must not throttle the threads the config starts.
    assert float(container["resources"]["limits"]["cpu"]) >= config.danforth.workers


def test_danforth_component_deploys_the_producer() -> None:
    config = site_config()
    assert_danforth_deployed(base_docs() + danforth_docs(), config)
    assert named(danforth_docs(), "Deployment", "terra-xfer-danforth") == k8s.workload(
        registry.spec("danforth")
    )
    kustomization = yaml.safe_load((DANFORTH / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Component"
    patch = yaml.safe_load((DANFORTH / "deleter.yaml").read_text(encoding="utf-8"))
    assert kustomization["patches"] == [{"path": "deleter.yaml"}]
    assert patch["metadata"]["name"] == "terra-xfer-deleter"
    (mount,) = patch["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert mount == {
        "name": registry.DANFORTH_CACHE_RW.claim,
        "mountPath": str(config.danforth.cache_root),
        "readOnly": False,
    }


def test_danforth_password_is_never_in_the_config_map() -> None:
    text = (BASE / k8s.CONFIG_FILE).read_text(encoding="utf-8")
    section = tomllib.loads(text)["danforth"]
    assert "password" not in section  # load() would refuse it too: a secret in the file
    assert "password" not in conninfo_to_dict(section["dsn"])
    assert database_name(section["dsn"]) == "LTSystem"  # refuses a dsn holding a password
    secret = DanforthConfig.__dataclass_fields__["password"].metadata["secret"]
    assert site_config().danforth.password is None
    given = load(BASE / k8s.CONFIG_FILE, env={ENV_PREFIX + secret: "s3cret"})
    assert given.danforth.password is not None and given.danforth.password.reveal() == "s3cret"
    assert of_kind(danforth_docs(), "Secret") == []  # made out of band: overlays/*/secrets
    for overlay in OVERLAY_NAMES:
        assert "password" in generated_secrets(overlay)["terra-xfer-lemnatec"]


def registered(name: str) -> bool:
    """Whether the process registry holds the metric ``name`` (a counter by its ``_total``)."""
    families = {m.name for m in REGISTRY.collect()}
    return name in families or name.removesuffix("_total") in families


def test_danforth_alerts_read_the_producers_own_metrics() -> None:
    assert danforth_service.LAST_SNAPSHOT is not None  # imported: its metrics are registered
    assert all(registered(name) for name in DANFORTH_METRICS)
    (base_rule,) = of_kind(base_docs(), "PrometheusRule")
    (rule,) = of_kind(danforth_docs(), "PrometheusRule")
    assert rule["metadata"]["labels"] == base_rule["metadata"]["labels"]
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    for name, r in rules.items():
        assert metric_names(r["expr"]) <= DANFORTH_METRICS, name
        assert r["labels"]["severity"] in ("warning", "critical"), name
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
    down = rules["TerraXferDanforthProducerDown"]["expr"]
    assert down.replace(" ", "") == "absent(terra_xfer_danforth_last_snapshot_id)"
    stalled = rules["TerraXferDanforthNotAdvancing"]["expr"]
    assert re.search(r"changes\(terra_xfer_danforth_last_snapshot_id\[24h\]\)", stalled)
    failing = rules["TerraXferDanforthPollFailing"]["expr"]
    assert re.search(r"increase\(terra_xfer_danforth_poll_errors_total\[5m\]\)", failing)


def assert_strimzi_complete(docs: list[Doc]) -> None:
    (kafka,) = of_kind(docs, "Kafka")
    cluster = kafka["metadata"]["name"]
    strimzi = [d for d in docs if d["apiVersion"].startswith("kafka.strimzi.io/")]
    assert {d["apiVersion"] for d in strimzi} == {
        "kafka.strimzi.io/v1"
    }  # Strimzi 1.x serves v1 only
    # KRaft and node pools are the only modes since Strimzi 0.48; the annotations are ignored.
    for doc in strimzi:
        annotations = doc["metadata"].get("annotations", {})
        assert not any(
            a.startswith(("strimzi.io/kraft", "strimzi.io/node-pools")) for a in annotations
        )
    spec = kafka["spec"]["kafka"]
    assert spec["version"] and spec["listeners"]
    assert "zookeeper" not in kafka["spec"]
    assert "topicOperator" in kafka["spec"]["entityOperator"]
    assert "userOperator" in kafka["spec"]["entityOperator"]  # reconciles the KafkaUsers
    # Secured: every listener TLS with SCRAM-SHA-512, ACLs enforced, no superuser of ours.
    for listener in spec["listeners"]:
        assert listener["tls"] is True, listener["name"]
        assert listener["authentication"] == {"type": "scram-sha-512"}, listener["name"]
    assert spec["authorization"] == {"type": "simple"}
    assert spec["config"].get("allow.everyone.if.no.acl.found", False) is False
    for user in of_kind(docs, "KafkaUser"):
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    # Kafka's own metrics: the JMX exporter's rules from a ConfigMap in the build, and the exporter
    # of group offsets; a PodMonitor scrapes each.
    metrics = spec["metricsConfig"]
    assert metrics["type"] == "jmxPrometheusExporter"
    ref = metrics["valueFrom"]["configMapKeyRef"]
    rules = yaml.safe_load(named(docs, "ConfigMap", ref["name"])["data"][ref["key"]])
    assert rules["rules"] and rules["lowercaseOutputName"] is True
    assert "kafkaExporter" in kafka["spec"]
    monitors = {
        m["spec"]["selector"]["matchLabels"]["strimzi.io/name"]: m
        for m in of_kind(docs, "PodMonitor")
    }
    assert set(monitors) == {f"{cluster}-kafka", f"{cluster}-kafka-exporter"}
    for monitor in monitors.values():
        assert monitor["spec"]["selector"]["matchLabels"]["strimzi.io/cluster"] == cluster
        assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["tcp-prometheus"]
    pools = of_kind(docs, "KafkaNodePool")
    roles: set[str] = set()
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert pool["spec"]["replicas"] >= 1 and pool["spec"]["storage"]["type"]
        assert set(pool["spec"]["roles"]) <= {"controller", "broker"}
        roles |= set(pool["spec"]["roles"])
    assert roles == {"controller", "broker"}
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    config = spec["config"]
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert 1 <= config[key] <= brokers
    assert (
        config["transaction.state.log.min.isr"]
        <= config["transaction.state.log.replication.factor"]
    )
    for topic in of_kind(docs, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert topic["spec"]["replicas"] <= brokers
        min_isr = int(
            topic["spec"]["config"].get("min.insync.replicas", config["min.insync.replicas"])
        )
        assert min_isr <= topic["spec"]["replicas"]


def test_strimzi_resources_have_what_the_operator_requires() -> None:
    assert_strimzi_complete(base_docs())


# --- Kafka users and their ACLs -------------------------------------------------------------------


def acl_tuples(user: Doc) -> set[Acl]:
    """A KafkaUser's ACL rules, one (resource type, name, pattern type, operation) per operation.
    Only plain allow rules for any host are understood; anything else fails here."""
    out: set[Acl] = set()
    for rule in user["spec"]["authorization"]["acls"]:
        assert rule.get("type", "allow") == "allow" and rule.get("host", "*") == "*", rule
        assert set(rule) <= {"resource", "operations", "type", "host"}, rule
        resource = rule["resource"]
        for op in rule["operations"]:
            out.add(
                (resource["type"], resource["name"], resource.get("patternType", "literal"), op)
            )
    return out


def expected_access(spec: StageSpec, prefix: str = "terra.") -> set[Acl]:
    """What ``spec``'s Kafka user must be allowed, worked out here from the registry and the code
    (not from terra_xfer.k8s): read its inputs, write its outputs (the dead-letter topic among
    them), Read its own group, Write its transactional ids; and where the code reads beyond that,
    exactly that. tests/integration/test_kafka_acls.py runs the stages under these ACLs."""
    reads, writes = set(spec.inputs), set(spec.outputs)
    groups: set[Acl] = set()
    if spec.group is not None:
        groups.add(("group", prefix + spec.group, "literal", "Read"))
    if (
        CHECKPOINTS in writes
    ):  # a producer reads its last checkpoint back (producers/checkpoints.py)
        reads.add(CHECKPOINTS)
        groups.add(("group", "terra-xfer-reader-", "prefix", "Describe"))  # terra_xfer/reading.py
    if spec.name in ("batcher", "state-keeper", "sweeper", "indexer"):  # a copy of files.state
        reads.add(FILES_STATE)
        groups.add(("group", "terra-xfer-state-view-", "prefix", "Describe"))  # state/view.py
    if spec.name == "sweeper":  # publishes every group's lag (terra_xfer/lag.py)
        for measured in registry.consumers():
            assert measured.group is not None
            reads |= set(measured.inputs)
            groups.add(("group", prefix + measured.group, "literal", "Describe"))
        groups.add(("group", prefix + "lag-probe", "literal", "Describe"))
    topics = {("topic", prefix + t, "literal", op) for t in reads for op in ("Describe", "Read")}
    topics |= {("topic", prefix + t, "literal", op) for t in writes for op in ("Describe", "Write")}
    # A consuming stage's transactional id is <group>-<instance id> (terra_xfer/stages/commit.py);
    # a producer's starts with its own name (terra.gantry-xferlog, terra.danforth-<db>, terra.sweeper).
    # The indexer writes nothing, so has no producer and no transactional id.
    txn = f"{prefix}{spec.group}-" if spec.group is not None else prefix + spec.name
    txns = (
        {("transactionalId", txn, "prefix", op) for op in ("Describe", "Write")}
        if writes
        else set()
    )
    return topics | groups | txns


def assert_users_match_the_registry(docs: list[Doc]) -> None:
    """One SCRAM KafkaUser per deployed stage, named like its Deployment, with exactly
    :func:`expected_access`; no other user; the Deployment logs in as that user."""
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    deployments = {d["metadata"]["name"]: d for d in workloads(docs)}
    stages = [s for s in registry.STAGES if f"terra-xfer-{s.name}" in deployments]
    assert set(users) == {f"terra-xfer-{s.name}" for s in stages}
    for spec in stages:
        user = users[f"terra-xfer-{spec.name}"]
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"]["type"] == "simple"
        granted = acl_tuples(user)
        missing, extra = expected_access(spec) - granted, granted - expected_access(spec)
        assert not missing and not extra, (spec.name, sorted(missing), sorted(extra))
        (container,) = deployments[f"terra-xfer-{spec.name}"]["spec"]["template"]["spec"][
            "containers"
        ]
        env = {e["name"]: e for e in container["env"]}
        assert env[ENV_PREFIX + "KAFKA_SASL_USERNAME"] == {
            "name": ENV_PREFIX + "KAFKA_SASL_USERNAME",
            "value": user["metadata"]["name"],
        }
        ref = env[PASSWORD_ENV]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": user["metadata"]["name"], "key": "password"}


def test_each_stage_has_a_kafka_user_with_exactly_its_access() -> None:
    docs = base_docs() + danforth_docs()
    assert_users_match_the_registry(docs)
    assert {u["metadata"]["name"] for u in of_kind(docs, "KafkaUser")} == {
        f"terra-xfer-{s.name}" for s in [*registry.deployed(), *registry.deployed("danforth")]
    }
    for user in of_kind(docs, "KafkaUser"):
        for kind, name, pattern, op in acl_tuples(user):
            assert op != "All" and kind != "cluster", user["metadata"]["name"]
            assert pattern == "literal" or kind != "topic", (name, "a topic is named in full")
    # The dead-letter topic is written by every stage the registry says dead-letters.
    for spec in registry.deployed() + registry.deployed("danforth"):
        user = named(docs, "KafkaUser", f"terra-xfer-{spec.name}")
        writes_deadletter = ("topic", "terra." + DEADLETTER, "literal", "Write") in acl_tuples(user)
        assert writes_deadletter == (DEADLETTER in spec.outputs), spec.name


def test_user_acls_fail_the_check_when_one_rule_is_off() -> None:
    """The check is not vacuous: one operation more, one topic less or a forgotten stage fails."""
    docs = base_docs() + danforth_docs()
    looser = [dict(d) for d in docs]
    batcher = named(looser, "KafkaUser", "terra-xfer-batcher")
    batcher["spec"] = {
        **batcher["spec"],
        "authorization": {
            "type": "simple",
            "acls": [
                *batcher["spec"]["authorization"]["acls"],
                {
                    "resource": {"type": "topic", "name": "terra.files.state"},
                    "operations": ["Write"],
                },
            ],
        },
    }
    with pytest.raises(AssertionError):
        assert_users_match_the_registry(looser)
    tighter = base_docs() + danforth_docs()
    ingest = named(tighter, "KafkaUser", "terra-xfer-ingest")
    ingest["spec"]["authorization"]["acls"] = [
        r
        for r in ingest["spec"]["authorization"]["acls"]
        if r["resource"]["name"] != "terra.files.transferred"
    ]
    with pytest.raises(AssertionError):
        assert_users_match_the_registry(tighter)
    forgotten = [d for d in docs if d["metadata"]["name"] != "terra-xfer-deleter"]
    forgotten += [named(docs, "Deployment", "terra-xfer-deleter")]
    with pytest.raises(AssertionError):
        assert_users_match_the_registry(forgotten)


def test_a_consuming_stage_transactional_id_is_under_its_users_prefix() -> None:
    """What commit.py really names a replica's producer (``<group>-<pod name>``) is inside the
    prefix its user may write, and another stage's is not."""
    config = dataclasses.replace(
        Config(),
        kafka=dataclasses.replace(
            Config().kafka, bootstrap_servers=UNREACHABLE, instance_id="pod-7"
        ),
    )
    users = {u["metadata"]["name"]: u for u in of_kind(base_docs(), "KafkaUser")}
    for spec in registry.consumers():
        if spec.deployment is None:
            continue
        kafka = StageKafka(config, spec)
        try:
            txn = kafka.producer.transactional_id
        finally:
            kafka.close()
        assert txn == f"{spec.consumer_group(config)}-pod-7"
        for name, user in users.items():
            allowed = any(
                kind == "transactionalId" and op == "Write" and txn.startswith(prefix)
                for kind, prefix, pattern, op in acl_tuples(user)
                if pattern == "prefix"
            ) or ("transactionalId", txn, "literal", "Write") in acl_tuples(user)
            assert allowed == (name == f"terra-xfer-{spec.name}"), (txn, name)


def test_the_stages_reach_kafka_over_tls_with_scram() -> None:
    """The site config the stages share speaks SASL_SSL/SCRAM-SHA-512 to the listener, trusts the
    cluster CA where each Deployment mounts it, and takes the user and password the Deployment
    gives (the settings librdkafka gets, as the stage would build them)."""
    config = site_config()
    (kafka,) = of_kind(base_docs(), "Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert config.kafka.bootstrap_servers == f"terra-kafka-bootstrap:{listener['port']}"
    assert config.kafka.ssl_ca_location == Path(k8s.KAFKA_CA_DIR) / k8s.CLUSTER_CA_KEY
    for deployment in of_kind(base_docs() + danforth_docs(), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value", "from a Secret") for e in container["env"]}
        env[PASSWORD_ENV] = "s3cret"
        stage = load(BASE / k8s.CONFIG_FILE, env=env)
        settings = security_settings(stage.kafka)
        assert settings["security.protocol"] == "SASL_SSL"
        assert settings["sasl.mechanism"] == "SCRAM-SHA-512"
        assert settings["sasl.username"] == deployment["metadata"]["name"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[k8s.KAFKA_CA_DIR])
        assert volume["secret"]["secretName"] == f"{kafka['metadata']['name']}-cluster-ca-cert"
        assert {"key": "ca.crt", "path": "ca.crt"} in volume["secret"]["items"]


# --- Secrets: never in the apply stream -----------------------------------------------------------

PLACEHOLDER = re.compile(r"REPLACE|CHANGE_?ME|PLACEHOLDER|EXAMPLE|TODO|<[^>]*>", re.IGNORECASE)


def overlay_namespace(overlay: str) -> str:
    kustomization = (OVERLAYS / overlay / "kustomization.yaml").read_text(encoding="utf-8")
    namespace: str = yaml.safe_load(kustomization)["namespace"]
    return namespace


def secrets_kustomization(overlay: str) -> Doc:
    text = (OVERLAYS / overlay / "secrets" / "kustomization.yaml").read_text(encoding="utf-8")
    doc: Doc = yaml.safe_load(text)
    return doc


def generated_secrets(overlay: str) -> dict[str, set[str]]:
    """Each Secret the overlay's out-of-band kustomization makes, with its keys (from the
    ``.example`` beside each untracked env file)."""
    directory = OVERLAYS / overlay / "secrets"
    out: dict[str, set[str]] = {}
    for generator in secrets_kustomization(overlay)["secretGenerator"]:
        assert set(generator) <= {"name", "envs", "type"}, generator  # values only from files
        keys = set()
        for env_file in generator["envs"]:
            example = (directory / f"{env_file}.example").read_text(encoding="utf-8")
            keys |= {
                line.split("=", 1)[0]
                for line in example.splitlines()
                if line.strip() and not line.startswith("#")
            }
        out[generator["name"]] = keys
    return out


def provided_secrets(docs: list[Doc], overlay: str) -> dict[str, set[str]]:
    """Every Secret a Deployment of ``docs`` may read, with its keys: the overlay's generated ones,
    the one Strimzi's User Operator makes per SCRAM KafkaUser (key ``password``) and the cluster
    CA the Cluster Operator makes (``<cluster>-cluster-ca-cert``, key ``ca.crt``)."""
    out = generated_secrets(overlay)
    for user in of_kind(docs, "KafkaUser"):
        if user["spec"]["authentication"]["type"] == "scram-sha-512":
            out[user["metadata"]["name"]] = {"password"}
    for kafka in of_kind(docs, "Kafka"):
        out[f"{kafka['metadata']['name']}-cluster-ca-cert"] = {"ca.crt"}
    return out


def assert_no_secret_in_the_build(docs: list[Doc]) -> None:
    """No Secret at all in what ``kubectl apply`` gets (so no placeholder can overwrite a real
    one), and no placeholder credential in any other resource either."""
    assert of_kind(docs, "Secret") == []
    for doc in docs:
        for key in ("data", "stringData"):
            for name, value in (doc.get(key) or {}).items():
                if doc["kind"] == "ConfigMap" and name.endswith((".toml", ".yml")):
                    continue  # the site config and the metrics rules: checked on their own
                assert not PLACEHOLDER.search(str(value)), (doc["kind"], doc["metadata"]["name"])


def test_no_secret_is_in_the_base_or_the_component() -> None:
    for directory in (BASE, DANFORTH):
        assert_no_secret_in_the_build(listed_docs(directory))
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert "secretGenerator" not in kustomization
    placeholder = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "terra-xfer-clowder"},
        "stringData": {"key": "REPLACE_WITH_CLOWDER_API_KEY"},
    }
    with pytest.raises(AssertionError):
        assert_no_secret_in_the_build([placeholder])
    with pytest.raises(AssertionError):
        assert_no_secret_in_the_build(
            [{**placeholder, "kind": "ConfigMap", "data": {"k": "<key>"}}]
        )


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_secrets_come_from_untracked_files(overlay: str) -> None:
    """The overlay's Secrets are made by its own kustomization from files git ignores (only the
    ``.example`` files and the kustomization are tracked), named as the Deployments name them,
    in the overlay's namespace; every Secret a Deployment reads is made there or by Strimzi."""
    kustomization = secrets_kustomization(overlay)
    assert kustomization["namespace"] == overlay_namespace(overlay)
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    directory = OVERLAYS / overlay / "secrets"
    for generator in kustomization["secretGenerator"]:
        for env_file in generator["envs"]:
            real = directory / env_file
            assert ignored(real), f"{real} must be in .gitignore"
            assert not ignored(directory / f"{env_file}.example")
            assert "=" in (directory / f"{env_file}.example").read_text()
    assert not ignored(directory / "kustomization.yaml")
    tracked = subprocess.run(
        ["git", "ls-files", str(directory)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert all(name.endswith((".example", "kustomization.yaml")) for name in tracked), (
        tracked
    )  # no credential was ever added
    docs = base_docs() + danforth_docs()
    provided = provided_secrets(docs, overlay)
    for deployment in workloads(docs):
        for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["key"] in provided.get(ref["name"], set()), var["name"]
    generated = set(generated_secrets(overlay))
    read = {
        var["valueFrom"]["secretKeyRef"]["name"]
        for d in workloads(docs)
        for var in d["spec"]["template"]["spec"]["containers"][0]["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert generated <= read  # nothing generated that no stage reads


def ignored(path: Path) -> bool:
    """Whether .gitignore keeps ``path`` out of git (asked of git itself)."""
    asked = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", str(path.relative_to(ROOT))],
        cwd=ROOT,
        check=False,
    )
    return asked.returncode == 0


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_secrets_kustomization_builds_from_the_examples(overlay: str, tmp_path: Path) -> None:
    """Filled in as the README says (each ``.example`` copied and given a value), the overlay's
    secrets kustomization makes exactly the Secrets and keys the Deployments read, with the
    values from the files, in the overlay's namespace."""
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed (set KUSTOMIZE to a binary)")
    work = tmp_path / "secrets"
    shutil.copytree(OVERLAYS / overlay / "secrets", work)
    for example in work.glob("*.example"):
        lines = example.read_text().splitlines()
        filled = [
            f"{line}s3cret=value-{example.stem}" if line.endswith("=") else line for line in lines
        ]
        (work / example.stem).write_text("\n".join(filled) + "\n")
    built = subprocess.run([*command, str(work)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    secrets = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {s["kind"] for s in secrets} == {"Secret"}
    assert {s["metadata"]["namespace"] for s in secrets} == {overlay_namespace(overlay)}
    made = {s["metadata"]["name"]: s["data"] for s in secrets}
    assert {name: set(data) for name, data in made.items()} == generated_secrets(overlay)
    for generator in secrets_kustomization(overlay)["secretGenerator"]:
        (env_file,) = generator["envs"]
        for value in made[generator["name"]].values():  # the whole value, "=" and all
            assert base64.b64decode(value).decode() == f"s3cret=value-{env_file}"


# --- overlays ---------------------------------------------------------------------------------------


@functools.cache
def built_overlay_text(overlay: str) -> str:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed (set KUSTOMIZE to a binary)")
    built = subprocess.run(
        [*command, str(OVERLAYS / overlay)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    return built.stdout


def built_overlay(overlay: str) -> list[Doc]:
    """The overlay as ``kustomize build`` makes it (built once a session, parsed anew each call)."""
    return [d for d in yaml.safe_load_all(built_overlay_text(overlay)) if d]


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_no_overlay_builds_a_secret(overlay: str) -> None:
    docs = built_overlay(overlay)
    assert_no_secret_in_the_build(docs)
    assert not re.search(r"REPLACE_WITH|kind: Secret\b", built_overlay_text(overlay))


def kustomize_command() -> list[str] | None:
    exe = os.environ.get("KUSTOMIZE") or shutil.which("kustomize")
    if exe:
        return [exe, "build"]
    kubectl = shutil.which("kubectl")
    return [kubectl, "kustomize"] if kubectl else None


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_builds_into_a_consistent_cluster(overlay: str) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed (set KUSTOMIZE to a binary)")
    built = subprocess.run(
        [*command, str(OVERLAYS / overlay)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    (config_map,) = [c for c in of_kind(docs, "ConfigMap") if k8s.CONFIG_FILE in c["data"]]
    config = site_config()
    assert config_map["data"][k8s.CONFIG_FILE] == (BASE / k8s.CONFIG_FILE).read_text()
    assert_strimzi_complete(docs)
    assert_scaling_fits_partitions(docs, config, overlay_namespace(overlay))
    assert_danforth_deployed(docs, config, overlay)
    assert_users_match_the_registry(docs)
    assert_no_secret_in_the_build(docs)
    deleter = named(docs, "Deployment", "terra-xfer-deleter")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in deleter["containers"][0]["volumeMounts"]}
    assert mounts[str(config.danforth.cache_root)]["readOnly"] is False
    assert mounts[str(config.gantry.cache_root)]["readOnly"] is False
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in deleter["volumes"]
        if "persistentVolumeClaim" in v
    }
    danforth = named(docs, "Deployment", "terra-xfer-danforth")["spec"]["template"]["spec"]
    assert claims[mounts[str(config.danforth.cache_root)]["name"]] == next(
        v["persistentVolumeClaim"]["claimName"]
        for v in danforth["volumes"]
        if v["name"] == registry.DANFORTH_CACHE_RW.claim
    )
    # The overlays give every stage but this one (which keeps the size it was measured for) the
    # same CPU, and leave every stage's memory as the base has it.
    expected = k8s.workload(registry.spec("danforth"))["spec"]["template"]["spec"]["containers"][0]
    assert danforth["containers"][0]["resources"] == expected["resources"]
    monitor = named(docs, "Deployment", "terra-xfer-monitor")["spec"]["template"]["spec"]
    cpu = {k: v["cpu"] for k, v in monitor["containers"][0]["resources"].items()}
    base_monitor = k8s.workload(registry.spec("monitor"))["spec"]["template"]["spec"]
    assert cpu != {k: v["cpu"] for k, v in base_monitor["containers"][0]["resources"].items()}
    for deployment in workloads(docs):
        name = deployment["metadata"]["name"]
        resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
        base = k8s.workload(registry.spec(name.removeprefix("terra-xfer-")))
        base_resources = base["spec"]["template"]["spec"]["containers"][0]["resources"]
        for kind in ("requests", "limits"):
            assert resources[kind]["memory"] == base_resources[kind]["memory"], name
            if name != "terra-xfer-danforth":  # StatefulSets too
                assert resources[kind]["cpu"] == cpu[kind], name
        assert_hardened(deployment)
        volume = next(
            v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v
        )
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (pool,) = of_kind(docs, "KafkaNodePool")
    topics = of_kind(docs, "KafkaTopic")
    kafka_config = of_kind(docs, "Kafka")[0]["spec"]["kafka"]["config"]
    if overlay == "dev":
        assert pool["spec"]["replicas"] == 1
        assert {t["spec"]["replicas"] for t in topics} == {1}
    else:
        assert pool["spec"]["replicas"] == 3
        assert {t["spec"]["replicas"] for t in topics} == {3}
        assert {t["spec"]["config"]["min.insync.replicas"] for t in topics} == {"2"}
        assert kafka_config["min.insync.replicas"] == 2
        assert kafka_config["transaction.state.log.replication.factor"] == 3
    assert len({d["metadata"].get("namespace") for d in docs}) == 1


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    """The Dockerfile's steps: copy the same sources, build the wheel, install it, run the CLI."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("terra_xfer", "producers", "consumers", "schemas"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", ".", "--no-deps", "-w", str(wheels)], cwd=src, check=True)
    (wheel,) = wheels.glob("terra_xfer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "terra_xfer/broker_pom.xml" in names
    assert any(n.startswith("schemas/published/") and n.endswith(".avsc") for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    install = [str(bin_dir / "python"), "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    subprocess.run([*install, str(wheel)], cwd=tmp_path, check=True)
    help_run = subprocess.run(
        [str(bin_dir / "terra-xfer"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert help_run.returncode == 0, help_run.stderr
    assert all(stage.name in help_run.stdout for stage in registry.deployed())
    probe = "import schemas.codec as c, terra_xfer; print(terra_xfer.__file__, len(c.current_schemas()))"
    imported = subprocess.run(
        [str(bin_dir / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr
    location, count = imported.stdout.split()
    assert location.startswith(str(env_dir)) and int(count) > 0


def test_each_state_volume_holds_its_stages_copy_of_the_retention_window() -> None:
    config = site_config()
    window_days = config.status.retain_settled_days + k8s.IN_FLIGHT_DAYS
    deployments = {d["metadata"]["name"]: d for d in workloads(base_docs())}
    keeping = set()
    for stage in registry.STAGES:
        deployment = deployments.get(f"terra-xfer-{stage.name}")
        if deployment is None:
            continue
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        claims = {
            c["metadata"]["name"]: c for c in deployment["spec"].get("volumeClaimTemplates", [])
        }
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        mounted = {m["name"] for m in container["volumeMounts"]}
        assert "state" in mounted and ("state" in volumes) != ("state" in claims), stage.name
        if "state" in claims:  # a copy of files.state: on a claim of the replica's own
            assert deployment["kind"] == "StatefulSet"
            assert claims["state"]["spec"]["accessModes"] == ["ReadWriteOnce"]
            limit = claims["state"]["spec"]["resources"]["requests"]["storage"]
        else:
            assert deployment["kind"] == "Deployment"
            limit = volumes["state"]["emptyDir"]["sizeLimit"]
        assert limit.endswith("Gi"), (stage.name, limit)
        assert stage.deployment is not None
        per_file = stage.deployment.copy_bytes_per_file
        if stage.deployment.copy_keeps_history:  # every file ever shipped
            needed = per_file * k8s.SITE_LIFETIME_FILES / 2**30
        else:
            needed = per_file * k8s.SITE_FILES_PER_DAY * window_days / 2**30
        assert int(limit[:-2]) >= max(needed, k8s.MIN_STATE_GI), (stage.name, limit, needed)
        if per_file:
            keeping.add(stage.name)
            assert "state" in claims, f"{stage.name}'s copy must outlive its pod"
    # Every stage that may read files.state keeps a copy of it, and only those.
    state_topic = KafkaConfig.topic_prefix + FILES_STATE
    readers = {
        s.name
        for s in registry.STAGES
        if s.deployment is not None
        and any(
            rule["resource"] == {"type": "topic", "name": state_topic, "patternType": "literal"}
            and "Read" in rule["operations"]
            for rule in k8s.kafka_acls(s)
        )
    }
    assert keeping == readers == {"batcher", "state-keeper", "sweeper", "indexer"}


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB (the suffixes the manifests use)."""
    for suffix, factor in (("Gi", 1024.0), ("Mi", 1.0)):
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    raise ValueError(f"unexpected quantity {quantity}")


def test_each_stage_asks_for_the_memory_it_was_measured_to_peak_at() -> None:
    """Requests at least each stage's peak RSS of the committed scale run, limits a quarter above
    it, whatever the overlay: a limit below a measured peak is an OOM kill in a busy night."""
    scale = json.loads((ROOT / "bench" / "scale.json").read_text(encoding="utf-8"))
    peaks: dict[str, float] = {}
    for measured in scale["measured"]:
        for stage, memory in measured["memory_mb"].items():
            peaks[stage] = max(peaks.get(stage, 0.0), memory["peak_mb"] * 1e6 / 2**20)
    stages = [s for s in registry.deployed() if s.name in peaks]
    assert {s.name for s in stages} >= {"state-keeper", "sweeper", "batcher", "gantry"}
    for docs in (base_docs(), *(built_overlay(o) for o in ("dev", "prod"))):
        sized = {
            w["metadata"]["name"]: w["spec"]["template"]["spec"]["containers"][0]["resources"]
            for w in workloads(docs)
        }
        for stage in stages:
            resources = sized[f"terra-xfer-{stage.name}"]
            peak = peaks[stage.name]
            assert mebibytes(resources["requests"]["memory"]) >= peak, (stage.name, peak)
            assert mebibytes(resources["limits"]["memory"]) >= 1.25 * peak, (stage.name, peak)
