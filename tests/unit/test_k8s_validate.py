"""Every core Kubernetes resource of the base and of each built overlay validates against the
schemas of a pinned Kubernetes release (kubernetes-validate, offline)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from terra_xfer.stages import registry

K8S_VERSION = "1.32"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
CORE = {
    "Deployment",
    "StatefulSet",
    "Service",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "Namespace",
}


def core_resources(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d and d.get("kind") in CORE]


def deployments(docs: list[dict[str, Any]]) -> set[str]:
    """The names of the Deployments and StatefulSets among ``docs``: one per stage the registry
    deploys there."""
    return {d["metadata"]["name"] for d in docs if d.get("kind") in ("Deployment", "StatefulSet")}


def validate_all(docs: list[dict[str, Any]]) -> list[str]:
    errors = []
    for doc in core_resources(docs):
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    return errors


def test_base_core_resources_validate() -> None:
    docs = [
        d
        for f in sorted((DEPLOY / "base").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d and "apiVersion" in d
    ]
    kinds = {d["kind"] for d in core_resources(docs)}
    assert {"Deployment", "StatefulSet", "PersistentVolumeClaim", "Service"} <= kinds
    # Secrets are created out of band (overlays/*/secrets), never applied with the manifests.
    assert "Secret" not in kinds
    assert deployments(docs) == {f"terra-xfer-{s.name}" for s in registry.deployed()}
    assert validate_all(docs) == []


def test_danforth_component_core_resources_validate() -> None:
    component = DEPLOY / "components" / "danforth"
    listed = yaml.safe_load((component / "kustomization.yaml").read_text())["resources"]
    docs = [d for name in listed for d in yaml.safe_load_all((component / name).read_text()) if d]
    kinds = sorted(d["kind"] for d in core_resources(docs))
    assert kinds == ["Deployment", "PersistentVolumeClaim", "PersistentVolumeClaim"]
    assert deployments(docs) == {f"terra-xfer-{s.name}" for s in registry.deployed("danforth")}
    assert validate_all(docs) == []


def test_a_broken_deployment_is_caught() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "three", "selector": {}, "template": {}},
    }
    assert validate_all([bad]) != []


def kustomize_command() -> list[str] | None:
    explicit = os.environ.get("KUSTOMIZE")
    if explicit and Path(explicit).exists():
        return [explicit, "build"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_built_overlays_validate(overlay: str) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed (make test installs kustomize)")
    built = subprocess.run(
        [*command, str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert {"terra-xfer-gantry", "terra-xfer-danforth"} <= deployments
    assert validate_all(docs) == []
