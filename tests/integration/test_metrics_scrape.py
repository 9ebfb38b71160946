"""The whole pipeline on the real broker, scraped: per-sensor counts, tailer, lag, readiness."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from producers.gantry.service import GantryProducer, log_source
from terra_xfer.cli import State
from terra_xfer.cli.lag import lag
from terra_xfer.config import Config
from terra_xfer.lag import pipeline_lag, publish_lag
from terra_xfer.metrics_http import Health, serve
from terra_xfer.sites.cache import path_rules
from terra_xfer.sites.gantry import CachePath, cache_path
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import read_all
from tests.pipeline import Stepping, built, drain, gantry_config, write_night

pytestmark = pytest.mark.broker
FILE_STAGES = ("arrived", "transferred", "ingested", "deleted")


@pytest.fixture
def config(pipeline_config: Config) -> Config:
    cfg = gantry_config(pipeline_config, max_files=20)
    create_topics(cfg)
    return cfg


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def files(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], stage: str, sensor: str
) -> float:
    labels = frozenset({("stage", stage), ("sensor", sensor)})
    return samples.get(("terra_xfer_files_total", labels), 0.0)


def test_a_drained_pipeline_exposes_its_counts_and_zero_lag(config: Config, tmp_path: Path) -> None:
    shipped = write_night(config, 40)
    rules = path_rules(config)
    per_sensor = Counter(
        w.sensor for rel in shipped if isinstance(w := cache_path(rel, rules), CachePath)
    )
    health = Health()
    server = serve(0, health, host="127.0.0.1")
    try:
        before = scrape(server.port)
        names = [s.name for s in registry.running(config) if s.name != "sweeper"]
        for name in names:
            health.expect(name)
        with (
            built(config, names) as stages,
            Stepping(
                [stage for _, stage in stages], names, beat=lambda name, _n: health.beat(name)
            ) as running,
        ):
            done = running.wait(lambda: drained(config, len(shipped)), 240)
            ready = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=10)
            with ready:
                assert ready.status == 200
        assert done, "the pipeline did not drain in time"
        publish_lag(config, list(registry.consumers()))
        after = scrape(server.port)
    finally:
        server.close()

    for stage in FILE_STAGES:
        for sensor, n in per_sensor.items():
            assert files(after, stage, sensor) - files(before, stage, sensor) == n, (stage, sensor)
    tailer = frozenset({("source", "xferlog")})
    assert (
        after[("terra_xfer_tailer_position_bytes", tailer)] == config.gantry.xferlog.stat().st_size
    )
    assert after[("terra_xfer_tailer_bytes_behind", tailer)] == 0
    assert 0 < after[("terra_xfer_cache_disk_used_ratio", tailer)] <= 1
    assert after[("terra_xfer_batch_files_count", frozenset())] > before.get(
        ("terra_xfer_batch_files_count", frozenset()), 0
    )
    groups = {s.consumer_group(config) for s in registry.consumers()}
    lags = [(dict(k[1]), v) for k, v in after.items() if k[0] == "terra_xfer_consumer_lag_messages"]
    ours = [(labels, v) for labels, v in lags if labels["group"] in groups]
    assert {labels["group"] for labels, _ in ours} == groups and all(v == 0 for _, v in ours)
    doc = lag_json(config)
    assert all(g["lag"] == 0 for g in doc["groups"].values())
    assert all(r["lag"] == 0 and r["lag_seconds"] == 0 for r in doc["rows"])
    committed = [
        v
        for k, v in after.items()
        if k[0] == "terra_xfer_committed_offset" and dict(k[1])["group"] == config.group("ingest")
    ]
    assert sum(committed) >= len(shipped)


def drained(config: Config, count: int) -> bool:
    """Every shipped file deleted and ingested, and every group consumed to the end."""
    deleted = read_all(config.kafka, config.topic("files.deleted"))
    ingested = read_all(config.kafka, config.topic("files.ingested"))
    if len(deleted) < count or len(ingested) < count:
        return False
    return all(r.lag == 0 for r in pipeline_lag(config, list(registry.consumers())))


def lag_json(config: Config) -> dict[str, Any]:
    state = State(None, "INFO", None)
    state._config = config
    result = CliRunner().invoke(lag, ["--json"], obj=state)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    assert set(doc["groups"]) == {s.consumer_group(config) for s in registry.consumers()}
    return doc


def test_lag_json_counts_unconsumed_arrivals_and_their_age(config: Config) -> None:
    shipped = write_night(config, 12)
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        drain(producer)
    finally:
        producer.close()
    doc = lag_json(config)
    batcher = doc["groups"][config.group("batcher")]
    # Offsets count each partition's commit marker too: one transaction wrote them all.
    assert len(shipped) <= batcher["lag"] <= len(shipped) + config.kafka.partitions
    assert batcher["members"] == 0
    rows = [r for r in doc["rows"] if r["group"] == config.group("batcher") and r["lag"]]
    assert rows and all(r["committed"] is None and r["lag_seconds"] >= 0 for r in rows)
    assert doc["groups"][config.group("monitor")]["lag"] == 0
