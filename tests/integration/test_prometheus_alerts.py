"""A real Prometheus server (Debian's package) scrapes a running `terra-xfer up` and evaluates the
project's alert rules as they ship: the first dead letter raises TerraXferDeadLetters, and a
stage that keeps being killed raises TerraXferStageRestarting, each keyed by the scrape's
namespace.

Prometheus scrapes every second and evaluates every second, with the base rules of
deploy/k8s/base/alerts.yaml unchanged (the two alerts asserted have no ``for:``, so nothing had
to be shortened; the ``for:`` of the others is proven by promtool, tests/unit/test_alert_rules.py).
The scrape carries the labels the ServiceMonitor gives in Kubernetes: job terra-xfer-metrics (the
Service's name) and a namespace.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from terra_xfer.broker import free_port
from terra_xfer.config import Config
from terra_xfer.stages.child import process_name
from terra_xfer.topics import create_topics
from tests.alert_rules import RULE_FILES, rule_groups, write_rules
from tests.kafka_read import wait_for
from tests.pipeline import finished, gantry_config, up_process
from tests.supervision import Proc, children_of

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus is not installed (Debian package prometheus; `make system-deps`)",
    ),
]
NAMESPACE = "terra-xfer-it"
KILLED = "deleter"  # a stage cheap to start again


@pytest.fixture
def config(pipeline_config: Config) -> Config:
    cfg = gantry_config(pipeline_config)
    cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, port=free_port()))
    create_topics(cfg)
    cfg.gantry.cache_root.mkdir(parents=True, exist_ok=True)
    cfg.gantry.xferlog.parent.mkdir(parents=True, exist_ok=True)
    cfg.gantry.xferlog.touch()
    return cfg


class Prometheus:
    """One Prometheus server on a free loopback port, with its own configuration and storage."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        rules = write_rules(rule_groups(RULE_FILES["base.rules.yaml"]), workdir / "rules.yaml")
        settings = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "terra-xfer-metrics",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{target_port}"],
                            "labels": {"namespace": NAMESPACE},
                        }
                    ],
                }
            ],
        }
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited: " + self.tail()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def series(self, query: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query?" + urllib.parse.urlencode({"query": query}))
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name]

    def evaluated_since(self, since: float) -> bool:
        """Whether every rule group has been evaluated after ``since`` (Unix time)."""
        groups = self.api("/api/v1/rules")["groups"]
        return bool(groups) and all(unix(g["lastEvaluation"]) > since for g in groups)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self.log.close()

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]


def unix(rfc3339: str) -> float:
    """Prometheus's timestamps (nanoseconds, Z) as Unix time."""
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target_port: int) -> Prometheus:
        prom = Prometheus(tmp_path, target_port)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()


def test_a_real_prometheus_raises_the_alerts_of_a_running_up(
    config: Config, prometheus_for: Any
) -> None:
    began = time.monotonic()
    up = up_process(config)
    try:
        prom: Prometheus = prometheus_for(config.metrics.port)
        wait_for(prom.ready, 20, what="prometheus ready")
        # Scraped with the namespace, the gantry stepping (its tailer's gauge), and every rule
        # evaluated since: nothing asserted below is pending or firing yet.
        wait_for(
            lambda: prom.series(f'terra_xfer_tailer_bytes_behind{{namespace="{NAMESPACE}"}}'),
            45,
            what="the gantry's tailer scraped",
        )
        seen = time.time()
        wait_for(lambda: prom.evaluated_since(seen), 10, what="the rules evaluated")
        assert prom.alerts("TerraXferDeadLetters") == []
        assert prom.alerts("TerraXferStageRestarting") == []
        assert prom.alerts("TerraXferGantryProducerDown") == []  # it exports its gauges

        # The first dead letter: its counter appears at 1.
        with config.gantry.xferlog.open("ab") as log:
            log.write(b"not an xferlog line\n")
        (dead,) = wait_for(
            lambda: [a for a in prom.alerts("TerraXferDeadLetters") if a["state"] == "firing"],
            30,
            what="TerraXferDeadLetters firing",
        )
        assert dead["labels"] == {
            "alertname": "TerraXferDeadLetters",
            "namespace": NAMESPACE,
            "source": "gantry:xferlog",
            "reason": "malformed",
            "severity": "warning",
        }
        assert dead["annotations"]["summary"] == "Dead letters from gantry:xferlog: malformed"

        # A stage that keeps dying: killed four times, each time up starts it again (1, 2, 4 s).
        killed: list[Proc] = []
        for _ in range(4):
            (stage,) = wait_for(
                lambda: [
                    p
                    for p in children_of(up.pid)
                    if p.comm == process_name(KILLED) and p not in killed
                ],
                30,
                what=f"{KILLED} started again",
            )
            os.kill(stage.pid, signal.SIGKILL)
            killed.append(stage)
        (restarting,) = wait_for(
            lambda: [a for a in prom.alerts("TerraXferStageRestarting") if a["state"] == "firing"],
            30,
            what="TerraXferStageRestarting firing",
        )
        assert restarting["labels"] == {
            "alertname": "TerraXferStageRestarting",
            "namespace": NAMESPACE,
            "stage": KILLED,
            "severity": "warning",
        }
        assert float(restarting["value"]) == 4
    finally:
        finished(up)
    print(f"real Prometheus alert test: {time.monotonic() - began:.1f} s")
