"""The gantry producer on the real broker: exactly once through rotation, gzip and kill -9."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from producers.gantry.night import log_line, uploads, write_upload
from producers.gantry.service import GantryProducer, log_source
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import env_for, read_all

pytestmark = pytest.mark.broker
START = datetime(2017, 8, 24, 19, 0, tzinfo=UTC)


@pytest.fixture
def config(pipeline_config: Config) -> Config:
    cfg = dataclasses.replace(
        pipeline_config,
        gantry=dataclasses.replace(
            pipeline_config.gantry, log_root="/gantry_data", chunk_lines=500
        ),
    )
    cfg.gantry.cache_root.mkdir(parents=True)
    cfg.gantry.xferlog.parent.mkdir(parents=True)
    create_topics(cfg)
    return cfg


def night(config: Config, count: int, seed: int = 1) -> tuple[list[bytes], list[str | None]]:
    """Write ``count`` uploads into the cache; return their log lines and keys (None: not shipped)."""
    rng = random.Random(seed)
    lines, keys = [], []
    for up in uploads(START, count, seed=seed, size=16):
        write_upload(config.gantry.cache_root, up, rng)
        lines.append(log_line(up))
        keys.append(f"ua-mac/{up.rel}" if up.whitelisted else None)
    return lines, keys


def drain(producer: GantryProducer) -> None:
    while producer.step():
        pass


def test_rotation_gzip_malformed_and_missing(config: Config) -> None:
    lines, all_keys = night(config, 300)
    keys = [k for k in all_keys if k]
    log = config.gantry.xferlog
    bad = [b"Tue Foo  5 12:35:58 2016 1 host 1 /x b _ i r u ftp 0 * c\n", b"garbage\n"]
    missing = log_line(next(uploads(START, 1, seed=99))).replace(b"/gantry_data/", b"/gantry_data/")
    log.write_bytes(b"".join(lines[:100]) + bad[0])
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        drain(producer)
        log.rename(log.with_name("xferlog-20170824"))
        log.write_bytes(b"".join(lines[100:200]) + bad[1] + missing)
        drain(producer)
        rotated = log.with_name("xferlog-20170824")
        with rotated.open("rb") as src, gzip.open(f"{rotated}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        rotated.unlink()
        log.rename(log.with_name("xferlog-20170825"))
        log.write_bytes(b"".join(lines[200:]))
        drain(producer)
    finally:
        producer.close()
    events = read_all(config.kafka, config.topic("files.arrived"))
    arrived = [v for name, v in events if name == "FileArrived"]
    assert Counter(v["key"] for v in arrived) == Counter(keys)  # each once, nothing else
    (gone,) = [v for name, v in events if name == "FileMissing"]  # and the missing one
    assert gone["key"] not in keys and gone["reason"].endswith("is missing from the cache")
    first = next(v for v in arrived if "stereoTop" in v["key"])
    assert first["sensor"] == "stereoTop" and first["dest_path"].startswith(
        "sites/ua-mac/raw_data/"
    )
    assert first["version"] == f"16:{first['mtime_ns']}" and first["source"] == "XFERLOG"
    dead = [v for _, v in read_all(config.kafka, config.topic("deadletter"))]
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 3, reasons
    assert any("missing from the cache" in r for r in reasons)
    assert {d["raw"] for d in dead} >= {bad[0].rstrip(b"\n"), bad[1].rstrip(b"\n")}


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_repeats_nothing(config: Config) -> None:
    lines, all_keys = night(config, 20_000, seed=3)
    log = config.gantry.xferlog
    env = {**os.environ, **env_for(config), "TERRA_XFER_GANTRY_CHUNK_LINES": "100"}
    cmd = [sys.executable, "-m", "terra_xfer", "--log-json", "gantry"]
    rng = random.Random(5)
    mid_stream: list[bool] = []

    def committed() -> int:
        return len(read_all(config.kafka, config.topic("files.arrived")))

    def run_and_kill(lines_written: int) -> bool:
        """Start the producer and kill -9 it at a random moment once it is following the log."""
        available = sum(1 for k in all_keys[:lines_written] if k)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert proc.stderr is not None
            for raw in proc.stderr:  # the producer says when it has placed its tailer
                if b"following" in raw:
                    break
            time.sleep(rng.uniform(0.0, 0.4))  # the random moment of the kill, not a wait
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()  # type: ignore[union-attr]
        mid_stream.append(committed() < available)
        return mid_stream[-1]

    log.write_bytes(b"".join(lines[:7000]))
    run_and_kill(7000)
    run_and_kill(7000)
    log.rename(log.with_name("xferlog-20170824"))  # rotation 1, perhaps while stopped mid-file
    log.write_bytes(b"".join(lines[7000:14000]))
    run_and_kill(14000)
    rotated = log.with_name("xferlog-20170824")
    with rotated.open("rb") as src, gzip.open(f"{rotated}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    rotated.unlink()
    log.rename(log.with_name("xferlog-20170825"))  # rotation 2
    log.write_bytes(b"".join(lines[14000:]))
    run_and_kill(20_000)
    expected = Counter(k for k in all_keys if k)  # one event per logged upload line
    assert any(mid_stream), "no kill landed while the producer had work left"
    final = subprocess.run(
        [*cmd, "--idle-exit", "3"], env=env, capture_output=True, timeout=300, check=False
    )
    assert final.returncode == 0, final.stderr[-2000:]
    arrived = Counter(v["key"] for _, v in read_all(config.kafka, config.topic("files.arrived")))
    assert arrived == expected


def test_a_lost_position_is_a_clear_error_and_reseat_recovers(config: Config) -> None:
    from click.testing import CliRunner

    from producers.gantry.tailer import CheckpointLostError
    from terra_xfer.cli import cli

    lines, all_keys = night(config, 40, seed=31)
    log = config.gantry.xferlog
    log.write_bytes(b"".join(lines[:20]))
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        drain(producer)
    finally:
        producer.close()
    log.unlink()  # the log and every sibling gone: the committed position is nowhere
    log.write_bytes(b"".join(lines[20:]))
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        with pytest.raises(CheckpointLostError, match="no log file holds fingerprint"):
            producer.step()
    finally:
        producer.close()
    env = env_for(config)
    result = CliRunner().invoke(cli, ["gantry", "reseat", "--from-time", "2017-08-24"], env=env)
    assert result.exit_code == 0, result.output
    assert "position set to xferlog byte 0" in result.output
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        drain(producer)
    finally:
        producer.close()
    arrived = Counter(v["key"] for _, v in read_all(config.kafka, config.topic("files.arrived")))
    assert arrived == Counter(k for k in all_keys if k)


def test_a_failed_transaction_is_read_again_by_the_next_step(config: Config) -> None:
    """`up` retries a stage's step after a transient error: the lines of the failed chunk must be
    read again, not skipped."""
    from terra_xfer.errors import TransientError

    lines, all_keys = night(config, 2_000, seed=41)
    config.gantry.xferlog.write_bytes(b"".join(lines))
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    calls = 0
    produce_all = producer.kafka.producer.produce_all

    def flaky(topic: str, events: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second chunk's transaction fails and is aborted
            raise TransientError("the broker went away for a moment")
        produce_all(topic, events)  # type: ignore[arg-type]

    producer.kafka.producer.produce_all = flaky  # type: ignore[method-assign]
    failures = 0
    try:
        while True:
            try:
                if not producer.step():
                    break
            except TransientError:
                failures += 1
    finally:
        producer.close()
    assert failures == 1 and calls > 4
    arrived = Counter(v["key"] for _, v in read_all(config.kafka, config.topic("files.arrived")))
    assert arrived == Counter(k for k in all_keys if k)


def latest_states(config: Config) -> dict[str, dict[str, Any]]:
    return {v["key"]: v for _, v in read_all(config.kafka, config.topic("files.state"))}


def test_a_logged_file_missing_from_the_cache_is_missing_until_it_shows_up(
    config: Config, tmp_path: Path
) -> None:
    """A line for a file the cache does not hold: a dead letter as ever, and files.state records
    the file MISSING with the reason, which `status` and `report` show. When the file shows up,
    found by the sweeper or logged again, it goes on to ARRIVED."""
    from click.testing import CliRunner

    from consumers.state.keeper import StateKeeper
    from consumers.state.view import StateFollower
    from producers.sweeper import Sweeper
    from terra_xfer.cli import cli
    from tests.kafka_read import env_for
    from tests.pipeline import run_until

    swept, relogged = [u for u in uploads(START, 20, seed=17, size=16) if u.whitelisted][:2]
    keys = {f"ua-mac/{u.rel}": u for u in (swept, relogged)}
    log = config.gantry.xferlog
    log.write_bytes(log_line(swept) + log_line(relogged))
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    keeper = StateKeeper(config, registry.spec("state-keeper"))
    view = StateFollower(config, tmp_path / "sweeper-view.sqlite", records=False)
    sweeper = Sweeper(config, registry.spec("sweeper"), view)
    try:
        drain(producer)
        run_until([keeper], lambda: len(latest_states(config)) == 2)
        gone = latest_states(config)
        assert {k: v["state"] for k, v in gone.items()} == dict.fromkeys(keys, "MISSING")
        for key, up in keys.items():
            assert gone[key]["reason"] == f"file {up.rel!r} is missing from the cache"
            assert [t["state"] for t in gone[key]["history"]] == ["MISSING"]
        dead = [v for _, v in read_all(config.kafka, config.topic("deadletter"))]
        assert sorted(d["reason"] for d in dead) == sorted(v["reason"] for v in gone.values())

        runner, env = CliRunner(), env_for(config)
        listed = runner.invoke(cli, ["status", "--json", "--state", "missing"], env=env)
        assert listed.exit_code == 0, listed.output
        rows = {r["key"]: r["reason"] for r in json.loads(listed.output)}
        assert rows == {k: v["reason"] for k, v in gone.items()}
        report = json.loads(runner.invoke(cli, ["report", "--json"], env=env).output)
        assert report["waiting"]["missing"]["files"] == 2 and report["files"] == []

        write_upload(config.gantry.cache_root, swept)  # an old file: the sweeper's to find
        assert sweeper.step() == 1
        write_upload(config.gantry.cache_root, relogged)
        with log.open("ab") as appended:
            appended.write(log_line(relogged))  # uploaded again, logged again
        drain(producer)
        run_until(
            [keeper],
            lambda: {v["state"] for k, v in latest_states(config).items()} == {"ARRIVED"},
        )
    finally:
        for stage in (producer, keeper, sweeper):
            stage.close()
        view.close()
    found = latest_states(config)
    for key, up in keys.items():
        assert [t["state"] for t in found[key]["history"]] == ["MISSING", "ARRIVED"]
        assert (found[key]["reason"], found[key]["previous_versions"]) == (None, [])
        st = (config.gantry.cache_root / up.rel).stat()
        assert found[key]["version"] == f"{st.st_size}:{st.st_mtime_ns}"
    sources = {k: v["history"][-1]["evidence"]["source"] for k, v in found.items()}
    assert sources == {f"ua-mac/{swept.rel}": "SWEEPER", f"ua-mac/{relogged.rel}": "XFERLOG"}
