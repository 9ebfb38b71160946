"""Every custom resource the manifests make validates against its operator's own CRD schema.

The CRDs are vendored under tests/crds (with each project's licence; tests/crds/README.md says from
which tag and path): Strimzi 1.0.0 and 1.2.0 (the oldest and newest release the manifests claim;
both serve only ``kafka.strimzi.io/v1``), KEDA 2.20.2 and prometheus-operator 0.93.0. A resource is
checked as the API server checks it with strict field validation (``kubectl apply`` by default):
its ``apiVersion`` must be a version the CRD serves, and it must match that version's
``openAPIV3Schema`` with no field the schema does not declare (the API server would drop or refuse
it, so a misspelt ``kafkaExporter`` would silently switch the exporter off). CEL rules
(``x-kubernetes-validations``) are not evaluated here.

Checked: the base and the Danforth component as committed, and both overlays as kustomize builds
them; and that the Kafka version is one every claimed Strimzi release supports.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.test_k8s_manifests import (
    BASE,
    DANFORTH,
    OVERLAY_NAMES,
    built_overlay,
    listed_docs,
)

CRDS = Path(__file__).resolve().parents[1] / "crds"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large
STRIMZI = ("strimzi-1.0.0", "strimzi-1.2.0")
# Each API group of the manifests and the vendored releases whose CRDs it must satisfy.
RELEASES = {
    "kafka.strimzi.io": STRIMZI,
    "keda.sh": ("keda-2.20.2",),
    "monitoring.coreos.com": ("prometheus-operator-0.93.0",),
}
# Groups served by Kubernetes itself (checked by test_k8s_validate.py, not here).
BUILT_IN = {"", "apps", "batch", "policy", "autoscaling"}
Doc = dict[str, Any]


def group_of(doc: Doc) -> str:
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def is_custom(doc: Doc) -> bool:
    group = group_of(doc)
    return group not in BUILT_IN and not group.endswith(".k8s.io")


@functools.cache
def load_crds(release: str) -> dict[tuple[str, str], Doc]:
    """The CustomResourceDefinitions of one vendored release, by (group, kind) (parsed once)."""
    crds: dict[tuple[str, str], Doc] = {}
    for path in sorted((CRDS / release).glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=LOADER):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                spec = doc["spec"]
                crds[(spec["group"], spec["names"]["kind"])] = doc
    assert crds, f"no CRD under {CRDS / release}"
    return crds


def strict(schema: Any) -> Any:
    """A structural schema as the API server applies it with strict field validation: an object
    with declared properties takes no other field unless the schema preserves unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def problems(doc: Doc, releases: tuple[str, ...] | None = None) -> list[str]:
    """Why ``doc`` would be refused by each vendored release of its operator (none: accepted)."""
    group = group_of(doc)
    version = doc["apiVersion"].split("/")[-1]
    name = f"{doc['kind']}/{doc.get('metadata', {}).get('name')}"
    if group not in RELEASES:
        return [f"{name}: no vendored CRDs for the API group {group!r}"]
    found = []
    for release in releases or RELEASES[group]:
        crd = load_crds(release).get((group, doc["kind"]))
        if crd is None:
            found.append(f"{name}: {release} has no CRD for {doc['kind']}")
            continue
        served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
        if version not in served:
            found.append(f"{name}: {release} does not serve {doc['apiVersion']} ({sorted(served)})")
            continue
        schema = strict(served[version]["schema"]["openAPIV3Schema"])
        validator = jsonschema.Draft4Validator(schema)
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in error.absolute_path) or "(top)"
            found.append(f"{name} ({release}): {where}: {error.message[:300]}")
    return found


def custom_resources(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if is_custom(d)]


def test_every_vendored_crd_has_its_licence_beside_it() -> None:
    for releases in RELEASES.values():
        for release in releases:
            licence = (CRDS / release / "LICENSE").read_text(encoding="utf-8")
            assert "Apache License" in licence and "Version 2.0" in licence, release
    readme = (CRDS / "README.md").read_text(encoding="utf-8")
    for releases in RELEASES.values():
        for release in releases:
            assert release in readme


def test_base_and_component_custom_resources_validate() -> None:
    docs = listed_docs(BASE) + listed_docs(DANFORTH)
    kinds = {d["kind"] for d in custom_resources(docs)}
    assert kinds == {
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "KafkaUser",
        "ScaledObject",
        "TriggerAuthentication",
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
    }
    assert [p for d in custom_resources(docs) for p in problems(d)] == []


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_built_overlay_custom_resources_validate(overlay: str) -> None:
    docs = built_overlay(overlay)
    custom = custom_resources(docs)
    assert {d["kind"] for d in custom} >= {"Kafka", "KafkaUser", "ScaledObject", "PodMonitor"}
    assert [p for d in custom for p in problems(d)] == []


def test_the_kafka_version_is_supported_by_every_claimed_strimzi_release() -> None:
    (kafka,) = [d for d in listed_docs(BASE) if d["kind"] == "Kafka"]
    version = kafka["spec"]["kafka"]["version"]
    for release in STRIMZI:
        table = yaml.safe_load((CRDS / release / "kafka-versions.yaml").read_text())
        supported = {str(v["version"]) for v in table if v.get("supported")}
        assert version in supported, (release, version, sorted(supported))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"Kafka {version}" in readme
    assert "Strimzi 1.0" in readme and "1.2" in readme


def resource(kind: str, name: str) -> Doc:
    (doc,) = [
        d
        for d in listed_docs(BASE) + listed_docs(DANFORTH)
        if d["kind"] == kind and d["metadata"]["name"] == name
    ]
    return copy.deepcopy(doc)


def test_the_validation_refuses_what_the_api_server_would() -> None:
    """Not vacuous: each mistake below is one the API server (or the operator) would refuse."""
    kafka = resource("Kafka", "terra")
    assert problems(kafka) == []
    old = {**kafka, "apiVersion": "kafka.strimzi.io/v1beta2"}  # gone in Strimzi 1.0
    assert any("does not serve" in p for p in problems(old))
    misspelt = copy.deepcopy(kafka)
    misspelt["spec"]["kafkaExportr"] = misspelt["spec"].pop("kafkaExporter")
    assert any("kafkaExportr" in p for p in problems(misspelt))
    listener = copy.deepcopy(kafka)
    listener["spec"]["kafka"]["listeners"][0]["authentication"]["type"] = "scram-sha-256"
    assert any("scram-sha-256" in p for p in problems(listener))

    user = resource("KafkaUser", "terra-xfer-batcher")
    assert problems(user) == []
    singular = copy.deepcopy(user)  # v1beta2's `operation`, removed in v1
    rule = singular["spec"]["authorization"]["acls"][0]
    rule["operation"] = rule.pop("operations")[0]
    assert problems(singular) != []
    everything = copy.deepcopy(user)
    everything["spec"]["authorization"]["acls"][0]["resource"]["type"] = "everything"
    assert problems(everything) != []

    scaled = resource("ScaledObject", "terra-xfer-ingest")
    assert problems(scaled) == []
    scaled["spec"]["triggers"][0]["authenticationRef"] = {"nam": "terra-xfer-ingest-kafka"}
    assert problems(scaled) != []
    auth = resource("TriggerAuthentication", "terra-xfer-ingest-kafka")
    auth["spec"]["secretTargetRef"][0].pop("key")
    assert problems(auth) != []

    monitor = resource("PodMonitor", "terra-kafka")
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
    assert problems(monitor) != []
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert problems(unknown) != []
