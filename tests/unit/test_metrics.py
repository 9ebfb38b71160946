"""The metrics registry, its updates, and the /metrics, /healthz and /readyz endpoints."""

from __future__ import annotations

import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from terra_xfer import metrics
from terra_xfer.config import load
from terra_xfer.metrics_http import Health, serve, serving
from terra_xfer.stages.host import Retries, RunOptions, StopSignal, step_loop

CONTRACT = {
    "terra_xfer_files_total",
    "terra_xfer_bytes_total",
    "terra_xfer_dead_letters_total",
    "terra_xfer_batch_files_bucket",
    "terra_xfer_batch_age_seconds_bucket",
    "terra_xfer_tasks",
    "terra_xfer_task_duration_seconds_bucket",
    "terra_xfer_oldest_untransferred_age_seconds",
    "terra_xfer_files_by_state",
    "terra_xfer_tailer_position_bytes",
    "terra_xfer_tailer_bytes_behind",
    "terra_xfer_cache_disk_used_ratio",
    "terra_xfer_consumer_lag_messages",
    "terra_xfer_consumer_lag_seconds",
    "terra_xfer_committed_offset",
    "terra_xfer_group_members",
}


def value(name: str, **labels: str) -> float:
    got = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_contracted_series_name_is_exported() -> None:
    assert metrics.exported_names() >= CONTRACT


def gauges() -> dict[str, Gauge]:
    import terra_xfer.stages.registry  # noqa: F401  (every stage's module, and its metrics)

    return {
        c._name: c
        for c in metrics.REGISTRY._collector_to_names  # every gauge of every module
        if isinstance(c, Gauge)
    }


def test_every_gauge_has_labels_and_reads_as_its_last_value_across_processes() -> None:
    """A gauge without labels is exported (at 0) by every process that imports the module, so
    ``max()`` over the pods reads 0 when its one owner is gone; with labels it exists only where
    it is set. Under ``up --processes`` a gauge left in prometheus_client's default mode ("all")
    would be served as one series per process, with a ``pid`` label the dashboards do not
    expect: each takes the last value set (the one stage that sets it)."""
    found = gauges()
    assert len(found) >= 14 and "terra_xfer_danforth_last_snapshot_id" in found
    assert {n for n, g in found.items() if not g._labelnames} == set()
    assert {g._multiprocess_mode for g in found.values()} == {"mostrecent"}


NOTHING_SET = """
import sys
from prometheus_client import generate_latest
import terra_xfer.metrics as metrics
from terra_xfer.stages import registry  # imports every stage's module, and their metrics
from terra_xfer.stages.host import Retries
Retries("batcher")  # a running stage: it sets only its own retry gauge
if len(sys.argv) > 1:
    registry_ = metrics.gathered(sys.argv[1])
else:
    registry_ = metrics.REGISTRY
sys.stdout.write(generate_latest(registry_).decode())
"""


def gauge_samples(text: str) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(text)
        if family.type == "gauge" and not family.name.endswith("_created")  # a counter's start
        for s in family.samples
        if s.name == family.name
    }


@pytest.mark.parametrize("processes", [False, True], ids=["one process", "up --processes"])
def test_a_stage_exports_no_gauge_it_does_not_set(tmp_path: Path, processes: bool) -> None:
    """A batcher exports its retry gauge and nothing of the cache disk, the oldest untransferred
    file, the catalog or the Danforth producer: those read as absent when their owner is gone."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    args = [sys.executable, "-c", NOTHING_SET]
    if processes:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
        args.append(str(tmp_path))
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=120)
    assert gauge_samples(out.stdout) == {"terra_xfer_stage_retrying[('stage', 'batcher')]": 0.0}


def test_file_counts_go_by_stage_and_sensor() -> None:
    before = value("terra_xfer_files_total", stage="ingested", sensor="stereoTop")
    before_bytes = value("terra_xfer_bytes_total", stage="ingested", sensor="stereoTop")
    metrics.count_file("ingested", "stereoTop", 8_147_712)
    metrics.count_file("ingested", "stereoTop", 4096)
    assert value("terra_xfer_files_total", stage="ingested", sensor="stereoTop") == before + 2
    assert value("terra_xfer_bytes_total", stage="ingested", sensor="stereoTop") == (
        before_bytes + 8_147_712 + 4096
    )
    metrics.count_file("deleted", None, 1)
    assert value("terra_xfer_files_total", stage="deleted", sensor="unknown") >= 1


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("line longer than the 65536-byte bound", "oversize"),
        ("file 'MAC/x/2017-08-24/a.dat' is missing from the cache", "missing"),
        ("logged path '/etc/passwd' is outside the log root", "unsafe"),
        ("no published schema has fingerprint 00ff00ff00ff00ff", "unknown_schema"),
        ("corrupt FileArrived body: EOFError: ", "corrupt_event"),
        ("FileDeleted is not an event batcher expects on t.files.arrived", "unexpected_event"),
        ("line has 3 words; an xferlog line has at least 18", "malformed"),
    ],
)
def test_dead_letter_reasons_fall_into_short_classes(reason: str, kind: str) -> None:
    assert metrics.reason_class(reason) == kind
    before = value("terra_xfer_dead_letters_total", source="gantry:xferlog", reason=kind)
    metrics.count_dead_letter("gantry:xferlog", reason)
    assert value("terra_xfer_dead_letters_total", source="gantry:xferlog", reason=kind) == (
        before + 1
    )


def test_sensor_of_reads_a_classified_path() -> None:
    class Where:
        sensor = "flirIrCamera"

    assert metrics.sensor_of(Where()) == "flirIrCamera"
    assert metrics.sensor_of(object()) == "unknown"


def test_a_batch_records_its_size_and_the_age_of_its_oldest_file() -> None:
    count = value("terra_xfer_batch_files_count")
    age_sum = value("terra_xfer_batch_age_seconds_sum")
    files = [{"mtime_ns": 100 * 10**9}, {"mtime_ns": 40 * 10**9}, {"mtime_ns": 90 * 10**9}]
    metrics.observe_batch(files, now_s=160.0)
    assert value("terra_xfer_batch_files_count") == count + 1
    assert value("terra_xfer_batch_files_bucket", le="5.0") >= 1
    assert value("terra_xfer_batch_age_seconds_sum") == pytest.approx(age_sum + 120.0)


def test_tasks_in_flight_by_status_and_their_duration_and_count_by_final_status() -> None:
    clock = Clock()
    tasks = metrics.TaskGauge(clock)
    durations = value("terra_xfer_task_duration_seconds_sum", status="SUCCEEDED")
    failed = value("terra_xfer_task_duration_seconds_count", status="FAILED")
    tasks.observe("t1", "ACTIVE", False)
    tasks.observe("t2", "ACTIVE", False)
    tasks.observe("t2", "INACTIVE", False)
    assert value("terra_xfer_tasks", status="ACTIVE") == 1
    assert value("terra_xfer_tasks", status="INACTIVE") == 1
    clock.now += 42.0
    tasks.observe("t1", "SUCCEEDED", True)
    assert value("terra_xfer_tasks", status="ACTIVE") == 0
    assert value("terra_xfer_task_duration_seconds_sum", status="SUCCEEDED") == pytest.approx(
        durations + 42.0
    )
    # FAILED is final: the task leaves the gauge, and the count of failed tasks (the alert's) grows
    tasks.observe("t2", "FAILED", True)
    assert value("terra_xfer_tasks", status="INACTIVE") == 0
    assert value("terra_xfer_task_duration_seconds_count", status="FAILED") == failed + 1


def test_a_stage_exports_its_retry_gauge_from_its_start() -> None:
    Retries("state-keeper")
    assert (
        metrics.REGISTRY.get_sample_value("terra_xfer_stage_retrying", {"stage": "state-keeper"})
        == 0
    )


class Index:
    def __init__(self, rows: dict[str, list[int]]) -> None:
        self.rows = rows

    def counts_by_state(self) -> dict[str, int]:
        return {s: len(r) for s, r in self.rows.items()}

    def oldest_updated_ms(self, states: Iterable[str]) -> dict[str, int]:
        return {s: min(self.rows[s]) for s in states if self.rows.get(s)}


def test_files_by_state_and_the_oldest_untransferred_age_per_state() -> None:
    index = Index({"ARRIVED": [95_000], "BATCHED": [70_000, 99_000], "DONE": [1, 2, 3]})
    metrics.observe_counts(index)
    metrics.observe_oldest(index, now_ms=100_000)
    assert value("terra_xfer_files_by_state", state="BATCHED") == 2
    assert value("terra_xfer_files_by_state", state="DONE") == 3
    assert value("terra_xfer_files_by_state", state="FAILED") == 0
    oldest = "terra_xfer_oldest_untransferred_age_seconds"
    assert value(oldest, state="BATCHED") == 30.0
    assert value(oldest, state="ARRIVED") == 5.0
    assert metrics.REGISTRY.get_sample_value(oldest, {"state": "FAILED"}) == 0.0
    assert metrics.REGISTRY.get_sample_value(oldest, {"state": "DONE"}) is None
    index = Index({"DONE": [1]})
    metrics.observe_counts(index)
    metrics.observe_oldest(index, now_ms=100_000)
    assert value(oldest, state="BATCHED") == 0.0
    assert value("terra_xfer_files_by_state", state="BATCHED") == 0


class Cp:
    def __init__(self, dev: int, ino: int, offset: int) -> None:
        self.dev, self.ino, self.offset = dev, ino, offset


def test_tailer_position_bytes_behind_and_cache_disk(tmp_path: Path) -> None:
    live = tmp_path / "xferlog"
    live.write_bytes(b"x" * 1000)
    st = os.stat(live)
    metrics.observe_tailer("xferlog", str(live), Cp(st.st_dev, st.st_ino, 300), str(tmp_path))
    assert value("terra_xfer_tailer_position_bytes", source="xferlog") == 300
    assert value("terra_xfer_tailer_bytes_behind", source="xferlog") == 700
    assert 0.0 < value("terra_xfer_cache_disk_used_ratio", source="xferlog") <= 1.0
    # Still in a rotated file: the whole live log is behind.
    metrics.observe_tailer("xferlog", str(live), Cp(st.st_dev, st.st_ino + 1, 50), str(tmp_path))
    assert value("terra_xfer_tailer_bytes_behind", source="xferlog") == 1000


def test_periodic_runs_at_most_once_per_interval_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    calls: list[float] = []

    def action() -> None:
        calls.append(clock.now)
        if len(calls) == 2:
            raise RuntimeError("broker away")

    periodic = metrics.Periodic(30.0, action, clock)
    assert periodic.maybe() and not periodic.maybe()
    clock.now += 30.0
    with caplog.at_level(logging.WARNING):
        assert periodic.maybe()
    assert "broker away" in caplog.text and len(calls) == 2


def hosted(name: str, stage: Stage, health: Health) -> Callable[[], int]:
    """One step of ``stage`` as the host takes it, each step told to ``health`` (as ``serve``)."""
    health.expect(name)
    stop, retries = StopSignal(), Retries(name, health)

    def beat(stepped: str, _handled: int) -> None:
        health.beat(stepped)

    def step() -> int:
        return step_loop(name, stage.step, stop, RunOptions(once=True), retries, beat)

    return step


def test_readiness_needs_every_stage_to_have_stepped_recently() -> None:
    clock = Clock()
    health = Health(stale_after_s=60.0, clock=clock)
    assert health.ready()[0] is False
    steps = [hosted("batcher", Stage(), health), hosted("monitor", Stage(), health)]
    assert health.ready() == (False, "not started: batcher, monitor")
    for step in steps:
        assert step() == 3
    assert health.ready() == (True, "ready")
    clock.now += 61.0
    steps[0]()
    assert health.ready() == (False, "no step for 60 s: monitor")


class Stage:
    closed = False

    def step(self) -> int:
        return 3

    def close(self) -> None:
        self.closed = True


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_the_endpoints_serve_metrics_liveness_and_readiness() -> None:
    clock = Clock()
    health = Health(stale_after_s=60.0, clock=clock)
    step = hosted("gantry", Stage(), health)
    server = serve(0, health, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    try:
        metrics.count_file("arrived", "VNIR", 68)
        code, body = get(base + "/metrics")
        assert code == 200
        assert 'terra_xfer_files_total{sensor="VNIR",stage="arrived"}' in body
        assert "# TYPE terra_xfer_batch_age_seconds histogram" in body
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/readyz") == (503, "not started: gantry\n")
        step()
        assert get(base + "/readyz") == (200, "ready\n")
        clock.now += 61.0  # the stage stalls
        assert get(base + "/readyz") == (503, "no step for 60 s: gantry\n")
        step()
        assert get(base + "/readyz")[0] == 200
        assert get(base + "/nothing")[0] == 404
    finally:
        server.close()


def test_serving_port_zero_is_off_and_a_busy_port_does_not_stop_the_stage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serving(0) as health:
        assert isinstance(health, Health)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.ERROR), serving(port) as health:
            assert isinstance(health, Health)
    assert f"metrics not served: port {port}" in caplog.text


def test_metrics_port_is_configurable(tmp_path: Path) -> None:
    assert load(None, env={}).metrics.port == 9100
    file = tmp_path / "site.toml"
    file.write_text("[metrics]\nport = 0\n")
    assert load(file, env={}).metrics.port == 0
    assert load(file, env={"TERRA_XFER_METRICS_PORT": "9200"}).metrics.port == 9200


def test_metrics_listen_on_this_machine_only_unless_configured(tmp_path: Path) -> None:
    assert load(None, env={}).metrics.address == "127.0.0.1"
    env = {"TERRA_XFER_METRICS_ADDRESS": "0.0.0.0"}
    assert load(None, env=env).metrics.address == "0.0.0.0"
    server = serve(0, Health())
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"
    finally:
        server.close()


def test_a_failed_answer_is_logged_not_printed(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The process's log stays one format (JSON in production): the server's errors go through
    logging, and a client that hung up is only a debug line."""
    health = Health()
    server = serve(0, health)
    try:
        with caplog.at_level(logging.DEBUG, logger="terra_xfer.metrics_http"):
            for fault in (RuntimeError("a bug in the answer"), ConnectionResetError("gone")):

                def ready(fault: Exception = fault) -> tuple[bool, str]:
                    raise fault

                monkeypatch.setattr(health, "ready", ready)
                with pytest.raises((urllib.error.URLError, ConnectionError)):
                    urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=10)
    finally:
        server.close()
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "ERROR" and "failed" in m for level, m in logged), logged
    assert any(level == "DEBUG" and "went away" in m for level, m in logged), logged
    assert "Exception occurred" not in capfd.readouterr().err
