"""The Grafana dashboard: it queries only series that terra_xfer.metrics exports, each in the
chosen namespace; it ships as a ConfigMap for Grafana's dashboard sidecar; its arrivals leave out
the sweeper's re-queues; its days start at the site's midnight."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from producers.sweeper import Sweeper
from terra_xfer import metrics
from tests.unit.test_k8s_manifests import kustomize_command

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
# Kept beside the kustomization that packages it (kustomize reads no file outside its directory);
# deploy/grafana/terra-xfer.json is a link to it.
DASHBOARD = BASE / "terra-xfer-dashboard.json"
POINTER = ROOT / "deploy" / "grafana" / "terra-xfer.json"
SIDECAR_LABEL = ("grafana_dashboard", "1")
METRIC = re.compile(r"\bterra_xfer_[a-z_]+\b")
SELECTOR = re.compile(r"\b(terra_xfer_[a-z_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(p["title"], t["expr"]) for p in panels(doc["panels"]) for t in p.get("targets", [])]


def test_every_panel_query_uses_exported_metric_names() -> None:
    exported = metrics.exported_names()
    found = queries()
    assert found
    for title, expr in found:
        names = set(METRIC.findall(expr))
        assert names, f"panel {title!r} queries no terra-xfer metric: {expr}"
        assert names <= exported, f"panel {title!r} uses unknown {names - exported}"


def test_every_non_row_panel_has_a_query() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in panels(doc["panels"]):
        if panel["type"] != "row":
            assert panel.get("targets"), panel["title"]


def test_per_sensor_daily_counts_cover_every_stage_in_files_and_bytes() -> None:
    daily = [e for _, e in queries() if "[1d]" in e and "by (sensor)" in e]
    for stage in ("arrived", "transferred", "ingested", "deleted"):
        for counter in ("terra_xfer_files_total", "terra_xfer_bytes_total"):
            assert any(counter in e and f'stage="{stage}"' in e for e in daily), (stage, counter)


def test_health_panels_watch_lag_failures_dead_letters_and_disk() -> None:
    used = {name for _, e in queries() for name in METRIC.findall(e)}
    assert {
        "terra_xfer_consumer_lag_messages",
        "terra_xfer_consumer_lag_seconds",
        "terra_xfer_dead_letters_total",
        "terra_xfer_cache_disk_used_ratio",
        "terra_xfer_tailer_bytes_behind",
        "terra_xfer_oldest_untransferred_age_seconds",
    } <= used


def test_every_query_reads_the_chosen_namespace_only() -> None:
    """dev and prod may share one Prometheus: each panel shows the namespace chosen at the top
    (or every namespace, "All"), never the two added up unasked."""
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    namespace = variables["namespace"]
    assert "namespace)" in namespace["query"]["query"] and not namespace["multi"]
    selector = re.compile(r"\b(terra_xfer_[a-z_]+)(\{[^}]*\})?")
    for title, expr in queries():
        for name, matchers in selector.findall(expr):
            assert 'namespace=~"$namespace"' in matchers, (title, name, expr)
    assert 'namespace=~"$namespace"' in variables["sensor"]["query"]["query"]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def variable(name: str) -> dict[str, Any]:
    (found,) = [v for v in dashboard()["templating"]["list"] if v["name"] == name]
    return found


# --- packaged for Grafana's sidecar -----------------------------------------------------------------


def test_the_grafana_path_points_at_the_packaged_dashboard() -> None:
    assert POINTER.resolve() == DASHBOARD.resolve()


def test_the_base_builds_a_sidecar_configmap_holding_exactly_the_dashboard() -> None:
    """``kustomize build deploy/k8s/base`` has one ConfigMap labelled for Grafana's dashboard
    sidecar, named without a hash suffix (a new version replaces the old one, never a second
    dashboard with the same uid), holding the dashboard file byte for byte."""
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed (set KUSTOMIZE to a binary)")
    built = subprocess.run([*command, str(BASE)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    key, value = SIDECAR_LABEL
    labelled = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get(key) == value
    ]
    assert len(labelled) == 1, [d["metadata"]["name"] for d in labelled]
    (config_map,) = labelled
    assert config_map["metadata"]["name"] == "terra-xfer-grafana-dashboard"
    assert config_map["data"] == {DASHBOARD.name: DASHBOARD.read_text(encoding="utf-8")}
    assert json.loads(config_map["data"][DASHBOARD.name])["uid"] == "terra-xfer"


# --- arrivals are the producers' announcements only ------------------------------------------------


def stage_matcher(matchers: str) -> tuple[str, str] | None:
    found = [(op, value) for label, op, value in MATCHER.findall(matchers) if label == "stage"]
    assert len(found) <= 1, matchers
    return found[0] if found else None


def admits(matcher: tuple[str, str], stage: str) -> bool:
    op, value = matcher
    if op == "=":
        return stage == value
    if op == "!=":
        return stage != value
    matched = re.fullmatch(value, stage) is not None
    return matched if op == "=~" else not matched


def test_no_query_counts_a_sweeper_requeue_as_an_arrival() -> None:
    """A file the sweeper announces is counted as stage ``requeued``: every selector of the file
    counters that admits ``arrived`` shuts out ``requeued``, and one with no stage matcher keeps
    the stages apart (``by (stage)``)."""
    arrivals = 0
    for title, expr in queries():
        for name, matchers in SELECTOR.findall(expr):
            if name not in ("terra_xfer_files_total", "terra_xfer_bytes_total"):
                continue
            matcher = stage_matcher(matchers)
            if matcher is None:
                assert "by (stage)" in expr, (title, expr)
                continue
            if admits(matcher, "arrived"):
                arrivals += 1
                assert not admits(matcher, "requeued"), (title, expr)
    assert arrivals >= 3  # files and bytes per day, and the last day's table
    requeues = [e for _, e in queries() if 'stage="requeued"' in e and "[1d]" in e]
    assert requeues, "the sweeper's re-queues are shown on a panel of their own"


def test_the_sweeper_counts_what_it_announces_as_requeued_not_arrived() -> None:
    sweeper = Sweeper.__new__(Sweeper)
    committed: list[Any] = []
    sweeper.config = SimpleNamespace(topic=lambda name: f"t.{name}")
    sweeper.codec = SimpleNamespace(encode=lambda record, value: record.encode())
    sweeper.kafka = SimpleNamespace(commit=lambda outputs: committed.extend(outputs))
    sensor = "dashboardTestSensor"

    def count(stage: str) -> float:
        labels = {"stage": stage, "sensor": sensor}
        return metrics.REGISTRY.get_sample_value("terra_xfer_files_total", labels) or 0.0

    before = {stage: count(stage) for stage in ("arrived", "requeued")}
    events = [{"key": f"k{i}", "sensor": sensor, "size": 10} for i in range(3)]
    assert sweeper._emit(events) == 3
    assert len(committed) == 3
    assert count("requeued") - before["requeued"] == 3
    assert count("arrived") == before["arrived"]


# --- days at the site ---------------------------------------------------------------------------------


def day_offsets() -> dict[str, str]:
    """The ``day_offset`` variable's choices, text to value."""
    return {o["text"]: o["value"] for o in variable("day_offset")["options"]}


def hours(value: str) -> float:
    found = re.fullmatch(r"(-?)(\d+)h", value)
    assert found, value
    return (-1 if found[1] else 1) * int(found[2])


def utc_offsets(zone: str) -> set[float]:
    """The zone's UTC offsets in hours, in January and in July."""
    tz = ZoneInfo(zone)
    noons = [datetime.datetime(2025, month, 15, 12, tzinfo=tz) for month in (1, 7)]
    return {(noon.utcoffset() or datetime.timedelta()).total_seconds() / 3600 for noon in noons}


def test_the_dashboard_shows_the_site_time_zone_and_days_from_its_midnight() -> None:
    """The dashboard's time zone is the Maricopa site's (America/Phoenix, UTC-7 all year), and the
    per-day bars start at its midnight by default: Prometheus aligns a 1d step to UTC midnight, so
    each daily increase is shifted by the ``day_offset`` variable (offset -7h: 07:00 UTC to 07:00
    UTC). Danforth's America/Chicago is offered for both its winter and its summer offset (no
    UTC choice: Prometheus rejects ``offset 0h``)."""
    doc = dashboard()
    assert doc["timezone"] == "America/Phoenix"
    assert utc_offsets(doc["timezone"]) == {-7}
    choice = variable("day_offset")
    assert choice["type"] == "custom" and not choice["multi"] and not choice["includeAll"]
    offsets = {hours(v) for v in day_offsets().values()}
    assert {hours(choice["current"]["value"])} == utc_offsets(doc["timezone"])
    assert utc_offsets("America/Chicago") <= offsets
    # Grafana builds the dropdown from "query" ("text : value" items split at commas): it must
    # offer the same choices, and no text may hold a comma or a colon of its own.
    assert not any("," in text or ":" in text for text in day_offsets())
    listed = dict(item.split(" : ") for item in choice["query"].split(", "))
    assert listed == day_offsets()
    assert choice["current"]["text"] == next(
        t for t, v in day_offsets().items() if v == choice["current"]["value"]
    )


def test_every_per_day_panel_counts_days_from_the_site_midnight() -> None:
    daily = [
        p
        for p in panels(dashboard()["panels"])
        if p["type"] == "timeseries" and any("[1d]" in t["expr"] for t in p.get("targets", []))
    ]
    assert len(daily) >= 9  # four stages in files and bytes, and the sweeper's re-queues
    for panel in daily:
        assert panel["interval"] == "1d", panel["title"]
        for target in panel["targets"]:
            assert "[1d] offset $day_offset)" in target["expr"], (panel["title"], target["expr"])


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package prometheus; `make system-deps` installs it)",
)
def test_every_query_parses_in_prometheus_with_every_day_offset(tmp_path: Path) -> None:
    """Each query, its variables filled in as Grafana would (a negative offset needs Prometheus
    2.33 or later), is valid PromQL by promtool."""
    rules = []
    for value in day_offsets().values():
        for i, (_, expr) in enumerate(queries()):
            filled = (
                expr.replace("$namespace", ".*")
                .replace("$sensor", ".*")
                .replace("$day_offset", value)
            )
            rules.append({"record": f"dashboard:query_{len(rules)}:{i}", "expr": filled})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [str(shutil.which("promtool")), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
