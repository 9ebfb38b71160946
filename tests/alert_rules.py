"""The project's alert rules as Prometheus reads them, for promtool and for a real Prometheus server.

The rules ship as prometheus-operator ``PrometheusRule`` resources; Prometheus and promtool read a
plain rules file, which is the resource's ``spec`` (its ``groups``) as it is.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = {
    # name of the plain rules file the promtool tests (tests/alerts/*.yaml) load: its resource
    "base.rules.yaml": ROOT / "deploy" / "k8s" / "base" / "alerts.yaml",
    "danforth.rules.yaml": ROOT / "deploy" / "k8s" / "components" / "danforth" / "alerts.yaml",
}
TESTS = ROOT / "tests" / "alerts"
Group = dict[str, Any]


def rule_groups(resource: Path) -> list[Group]:
    """The rule groups of a PrometheusRule manifest."""
    doc = yaml.safe_load(resource.read_text(encoding="utf-8"))
    assert doc["kind"] == "PrometheusRule", resource
    groups: list[Group] = doc["spec"]["groups"]
    return groups


def alerts(groups: list[Group]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def write_rules(
    groups: list[Group], path: Path, *, annotations: bool = True, for_: str | None = None
) -> Path:
    """``groups`` as a plain rules file at ``path``; without annotations (promtool's tests then
    compare labels only), or with every ``for:`` replaced by ``for_``."""
    groups = copy.deepcopy(groups)
    for rule in alerts(groups):
        if not annotations:
            rule.pop("annotations", None)
        if for_ is not None and "for" in rule:
            rule["for"] = for_
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path
