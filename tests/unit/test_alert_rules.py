"""The alert rules, checked and unit-tested by Prometheus's own promtool (Debian package prometheus).

The rules ship as PrometheusRule resources (deploy/k8s/base/alerts.yaml and the Danforth
component's); their groups are written out as plain rules files, ``promtool check rules`` validates
them (expressions and annotation templates), and ``promtool test rules`` runs tests/alerts/*.yaml:
for every alert a series history that fires it and one that must not. The tests compare labels
only (the rules they load are written without annotations), and every alert that fires must carry
the namespace, so dev never hides prod. Then the wrong rules issue 22 found are put back one at a
time: the tests must fail on each.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alert_rules import RULE_FILES, TESTS, alerts, rule_groups, write_rules

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package prometheus; `make system-deps` installs it)",
)
TEST_FILES = sorted(TESTS.glob("*.yaml"))
# Alerts that fire without a namespace: nothing of the kind is scraped anywhere (absent()).
UNKEYED = {"TerraXferNotScraped", "TerraXferDanforthProducerDown"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def all_alerts() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for resource in RULE_FILES.values()
        for rule in alerts(rule_groups(resource))
    }


def cases() -> list[tuple[str, str, list[dict[str, Any]]]]:
    """Every (test file, alert, expected alerts) of tests/alerts."""
    found = []
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for test in doc["tests"]:
            for check in test.get("alert_rule_test", []):
                found.append((path.name, check["alertname"], check.get("exp_alerts") or []))
    return found


def run_tests(
    tmp_path: Path, names: list[str], changed: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` on the test files ``names``, beside the rules files they load
    (with the alerts in ``changed`` given another expression)."""
    for rules_name, resource in RULE_FILES.items():
        groups = rule_groups(resource)
        for rule in alerts(groups):
            rule["expr"] = (changed or {}).get(rule["alert"], rule["expr"])
        write_rules(groups, tmp_path / rules_name, annotations=False)
    for name in names:
        shutil.copy(TESTS / name, tmp_path / name)
    return promtool("test", "rules", *names, cwd=tmp_path)


def test_the_rules_pass_promtool_check(tmp_path: Path) -> None:
    files = [
        str(write_rules(rule_groups(resource), tmp_path / name))
        for name, resource in RULE_FILES.items()
    ]
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def test_every_alert_has_a_history_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    names = set(all_alerts())
    tested = cases()
    fired = {alert for _, alert, expected in tested if expected}
    quiet = {alert for _, alert, expected in tested if not expected}
    assert {alert for _, alert, _ in tested} <= names  # no test of an alert that is gone
    assert names - fired == set(), "alerts no test fires"
    assert names - quiet == set(), "alerts no test keeps quiet"


def test_every_alert_fires_keyed_by_namespace() -> None:
    keyed: set[str] = set()
    for name, alert, expected in cases():
        for exp in expected:
            labels = exp.get("exp_labels", {})
            assert alert in UNKEYED or "namespace" in labels, (name, alert, labels)
            if "namespace" in labels:
                keyed.add(alert)
    assert set(all_alerts()) - keyed == {"TerraXferDanforthProducerDown"}


@pytest.mark.parametrize("name", [p.name for p in TEST_FILES])
def test_promtool_rule_tests_pass(tmp_path: Path, name: str) -> None:
    result = run_tests(tmp_path, [name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# The rules as they were (each with the namespace added, so only the property named fails), and
# the test file that must catch each.
WRONG = {
    "first dead letter never alerts": (
        "TerraXferDeadLetters",
        "sum by (namespace, source, reason) (increase(terra_xfer_dead_letters_total[10m])) > 0",
        "files.yaml",
    ),
    "FAILED tasks never alert": (
        "TerraXferTasksFailedOrInactive",
        'sum by (namespace, status) (terra_xfer_tasks{status=~"FAILED|INACTIVE"}) > 0',
        "files.yaml",
    ),
    "lag growing fires on a normal night": (
        "TerraXferConsumerLagGrowing",
        "sum by (namespace, group, topic) (deriv(terra_xfer_consumer_lag_messages[10m])) > 0",
        "days.yaml",
    ),
    "a Globus task of hours is a stuck offset": (
        "TerraXferCommittedOffsetStuck",
        "max by (namespace, group, topic, partition) (changes(terra_xfer_committed_offset[15m]))"
        " == 0 and max by (namespace, group, topic, partition)"
        " (terra_xfer_consumer_lag_messages) > 0",
        "days.yaml",
    ),
    "a Globus task of an hour is time lag": (
        "TerraXferConsumerTimeLagHigh",
        "max by (namespace, group, topic) (terra_xfer_consumer_lag_seconds) > 900",
        "lag.yaml",
    ),
    "dev masks prod's cache disk": (
        "TerraXferCacheDiskFull",
        "max(terra_xfer_cache_disk_used_ratio) > 0.85",
        "files.yaml",
    ),
    "dev masks prod's oldest file": (
        "TerraXferOldestUntransferredFile",
        "max(terra_xfer_oldest_untransferred_age_seconds) > 43200",
        "files.yaml",
    ),
    "a dead sweeper is silent": (
        "TerraXferLagUnmeasured",
        "absent(terra_xfer_consumer_lag_messages)",
        "lag.yaml",
    ),
}


@pytest.mark.parametrize("why", list(WRONG))
def test_the_wrong_rules_fail_the_tests(tmp_path: Path, why: str) -> None:
    alert, expr, name = WRONG[why]
    result = run_tests(tmp_path, [name], {alert: expr})
    assert result.returncode != 0, f"{name} passes with the wrong {alert}: {why}"
    assert f"alertname: {alert}," in result.stdout + result.stderr
