"""Hostile input through the real stages on the real broker: every line and file accounted for.

The gantry producer follows a log of hostile lines (odd names, ``..``, a name split by a newline,
binary junk, an oversize line, a symlinked file, a rotation mid-line): each line ends as a
FileArrived, a dead letter with its reason and raw bytes, or a counted skip, and the producer
never stops. The sweeper finds the files whose log lines were lost to that (a name with a newline
among them) and the pipeline takes them to DONE under their exact names, never touching what a
planted symlink points at.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumers.batcher import Batcher
from consumers.catalog.local import LocalCatalog
from consumers.deleter import Deleter
from consumers.ingest import Ingest
from consumers.monitor import Monitor
from consumers.state.keeper import StateKeeper
from consumers.state.view import StateFollower
from consumers.transfer.local import LocalTransfer
from producers.gantry.service import GantryProducer, log_source
from producers.sweeper import Sweeper
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import read_all
from tests.pipeline import gantry_config, run_until

pytestmark = pytest.mark.broker
WHEN = datetime(2016, 8, 24, 12, 0, tzinfo=UTC)
FOLDER = "MAC/weather/2016-08-24"
ODD_NAMES = [
    "tab\there.dat",
    "esc\x1b[31mred.dat",
    "bell\x07.dat",
    "quote'\"s.dat",
    "back\\slash.dat",
    "sp ace.dat",
    "dash -rf.dat",
    "caf\u00e9 \u2603.dat",
    "y" * 200 + ".dat",
]


@pytest.fixture
def config(pipeline_config: Config) -> Iterator[Config]:
    cfg = gantry_config(pipeline_config)
    cfg = dataclasses.replace(
        cfg,
        gantry=dataclasses.replace(cfg.gantry, max_line_bytes=4096),
        sweeper=dataclasses.replace(cfg.sweeper, min_age_s=0.0),
    )
    cfg.gantry.cache_root.mkdir(parents=True)
    cfg.gantry.xferlog.parent.mkdir(parents=True)
    create_topics(cfg)
    yield cfg


def plant(cache: Path, rel: str, data: bytes | None = None) -> Path:
    path = cache / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else rel.encode("utf-8", "surrogateescape"))
    stamp = WHEN.timestamp()
    os.utime(path, (stamp, stamp))
    return path


def logged_as_is(rel: str, size: int) -> bytes:
    name = os.fsencode("/gantry_data/" + rel)
    return (
        b"Wed Aug 24 05:00:00 2016 1 10.0.0.7 "
        + str(size).encode()
        + b" "
        + name
        + b" b _ i r lemnatec ftp 0 * c\n"
    )


def test_a_hostile_log_ends_as_events_dead_letters_and_skips(
    config: Config, tmp_path: Path
) -> None:
    cache, log = config.gantry.cache_root, config.gantry.xferlog
    shipped = {f"{FOLDER}/{name}": plant(cache, f"{FOLDER}/{name}") for name in ODD_NAMES}
    non_utf8 = f"{FOLDER}/raw\udcff\udcfe.dat"
    shipped[non_utf8] = plant(cache, non_utf8)
    split = f"{FOLDER}/first\nsecond.dat"
    plant(cache, split)
    outside = tmp_path / "outside.dat"
    outside.write_bytes(b"not ours")
    (cache / FOLDER / "link.dat").symlink_to(outside)
    lines = [logged_as_is(rel, p.stat().st_size) for rel, p in shipped.items()]
    bad = [
        logged_as_is(split, 7),  # two lines, both dead letters
        logged_as_is(f"{FOLDER}/../../../etc/passwd", 7),
        logged_as_is(f"{FOLDER}/link.dat", 8),
        logged_as_is(f"{FOLDER}/never-uploaded.dat", 7),
        b"\x00\xff\xfe binary junk \x1b[2J\n",
        b"Tue Apr  5 12:35:58 2016 " + b"x" * 5000 + b"\n",  # over max_line_bytes
        logged_as_is("ScriptBackup/2016-08-24/backup.tar", 7),  # not whitelisted: a skip
    ]
    log.write_bytes(b"".join(lines[:5] + bad + lines[5:]) + b"Wed Aug 24 05:00:00 2016 unended")
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        while producer.step():
            pass
        log.rename(log.with_name("xferlog-20160825"))  # rotated with its last line unended
        log.write_bytes(logged_as_is(f"{FOLDER}/{ODD_NAMES[0]}", 7))
        while producer.step():
            pass
        counts = producer.handler.counts
    finally:
        producer.close()

    events = read_all(config.kafka, config.topic("files.arrived"))
    arrived = [v for name, v in events if name == "FileArrived"]
    on_disk = {(v["raw_path"] or v["path"].encode()) for v in arrived}
    assert on_disk == {os.fsencode(rel) for rel in shipped}
    assert len(arrived) == len(shipped) + 1  # the re-upload logged after the rotation
    gone = [v for name, v in events if name == "FileMissing"]  # beside its dead letter
    assert [v["path"] for v in gone] == [f"{FOLDER}/never-uploaded.dat"]
    assert len(events) == len(arrived) + len(gone)
    dead = [v for _, v in read_all(config.kafka, config.topic("deadletter"))]
    assert len(dead) == 8  # 2 halves of the split line, 5 bad lines, the unended one
    assert all(d["reason"] and d["source"] == "gantry:xferlog" for d in dead)
    reasons = " | ".join(d["reason"] for d in dead)
    for expected in ("'..'", "not a regular file", "missing from the cache", "longer than"):
        assert expected in reasons
    assert "middle of a line" in reasons  # the unended line of the rotated file
    assert sum(1 for d in dead if b"first" in d["raw"] or d["raw"].startswith(b"second")) == 2
    assert counts.lines == len(arrived) + len(dead) + sum(counts.skipped.values())
    assert counts.skipped == {"not_whitelisted": 1}
    assert outside.read_bytes() == b"not ours"


def states(config: Config) -> dict[str, dict[str, Any]]:
    return {v["key"]: v for _, v in read_all(config.kafka, config.topic("files.state"))}


def test_the_sweeper_ships_odd_names_exactly_and_leaves_symlinks_alone(
    config: Config, tmp_path: Path
) -> None:
    cache = config.gantry.cache_root
    names = [*ODD_NAMES, "new\nline.dat", "\nstarts-with-newline.dat"]
    files = {f"{FOLDER}/{name}": plant(cache, f"{FOLDER}/{name}") for name in names}
    outside = tmp_path / "outside"
    (outside / "2016-08-25").mkdir(parents=True)
    (outside / "2016-08-25" / "secret.dat").write_bytes(b"not ours")
    (cache / "MAC/weather/2016-08-25").symlink_to(outside / "2016-08-25")
    (cache / FOLDER / "link.dat").symlink_to(outside / "2016-08-25" / "secret.dat")
    backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
    sweep_view = StateFollower(config, tmp_path / "sweeper-view.sqlite")
    batch_view = StateFollower(config, tmp_path / "batcher-view.sqlite")
    stages: list[Any] = [
        Sweeper(config, registry.spec("sweeper"), sweep_view),
        Batcher(config, registry.spec("batcher"), backend, batch_view),
        Monitor(config, registry.spec("monitor"), backend),
        StateKeeper(config, registry.spec("state-keeper")),
        Ingest(config, registry.spec("ingest"), LocalCatalog(config.catalog.path)),
        Deleter(config, registry.spec("deleter"), backend),
    ]
    keys = {f"ua-mac/{rel}" for rel in files}
    try:
        run_until(
            stages, lambda: all(states(config).get(k, {}).get("state") == "DONE" for k in keys)
        )
    finally:
        for stage in stages:
            stage.close()
        sweep_view.close()
        batch_view.close()
        backend.close()
    assert set(states(config)) == keys  # nothing behind a symlink was offered
    transferred = [v for n, v in read_all(config.kafka, config.topic("files.transferred"))]
    for v in transferred:
        copy = config.transfer.destination_root / v["dest_path"]
        assert copy.read_bytes() == v["path"].encode(), v["path"]
    assert not any(p.exists() for p in files.values())  # each deleted after its verified copy
    assert (outside / "2016-08-25" / "secret.dat").read_bytes() == b"not ours"
    assert (cache / FOLDER / "link.dat").is_symlink()


def test_the_sweeper_offers_a_file_whose_name_is_not_utf8(config: Config, tmp_path: Path) -> None:
    rel = f"{FOLDER}/latin1-caf\udce9.dat"
    plant(cache := config.gantry.cache_root, rel)
    assert (cache / rel).exists()
    view = StateFollower(config, tmp_path / "view.sqlite")
    sweeper = Sweeper(config, registry.spec("sweeper"), view)
    try:
        assert sweeper.step() == 1
    finally:
        sweeper.close()
        view.close()
    (event,) = [v for _, v in read_all(config.kafka, config.topic("files.arrived"))]
    assert event["raw_path"] == os.fsencode(rel)


def test_a_logged_name_that_is_not_utf8_is_transferred(config: Config, tmp_path: Path) -> None:
    config = dataclasses.replace(
        config, monitor=dataclasses.replace(config.monitor, max_attempts=1)
    )
    rel = f"{FOLDER}/raw\udcff.dat"
    path = plant(config.gantry.cache_root, rel)
    config.gantry.xferlog.write_bytes(logged_as_is(rel, path.stat().st_size))
    backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
    stages: list[Any] = [
        GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog")),
        Batcher(config, registry.spec("batcher"), backend),
        Monitor(config, registry.spec("monitor"), backend),
    ]

    def outcomes() -> list[tuple[str, dict[str, Any]]]:
        return read_all(config.kafka, config.topic("files.transferred"))

    try:
        run_until(stages, lambda: any(n == "FileTransferred" or v["final"] for n, v in outcomes()))
    finally:
        for stage in stages:
            stage.close()
        backend.close()
    assert [n for n, _ in outcomes()] == ["FileTransferred"], outcomes()
