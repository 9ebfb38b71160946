"""The Grafana dashboard queries only series that terra_xfer.metrics exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from terra_xfer import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "terra-xfer.json"
METRIC = re.compile(r"\bterra_xfer_[a-z_]+\b")


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
