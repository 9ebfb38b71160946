"""up's progress line: bytes moved and lag as they are when the line is written (lines 10 s apart
when up logs them), files/s of this run, lag per stage from the one lag computation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.state.status_index import StatusIndex
from terra_xfer.cli import up
from terra_xfer.cli.up import SLOW_EVERY_S, Progress, lag_text
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.lag import GroupLag, PartitionLag
from tests.samples import sample

MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lag:
    """What the lag computation answers, and how often it was asked."""

    def __init__(self) -> None:
        self.rows: list[PartitionLag] = []
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self, *_args: Any, **_kwargs: Any) -> list[PartitionLag]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.rows


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = Config()
    return dataclasses.replace(
        base, status=dataclasses.replace(base.status, index_path=tmp_path / "status.sqlite")
    )


@pytest.fixture
def lag(monkeypatch: pytest.MonkeyPatch) -> Lag:
    measured = Lag()
    monkeypatch.setattr(up, "pipeline_lag", measured)
    monkeypatch.setattr(up, "count_dead_letters", lambda *_a, **_k: {"gantry": 2})
    return measured


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def progress(config: Config, clock: Clock, lag: Lag) -> Iterator[Progress]:
    shown = Progress(config, clock=clock)
    try:
        yield shown
    finally:
        shown.close()


class Files:
    """Files written into the status index as DONE, ``size`` bytes each, through an index of
    their own, as the indexer (another process) writes it."""

    def __init__(self, config: Config) -> None:
        self.offset = 0
        self.path = config.status.index_path

    def done(self, _progress: Progress, count: int, size: int) -> None:
        records = []
        for _ in range(count):
            key = f"ua-mac/LemnaTec/MovingSensor/stereoTop/2017-08-24/f{self.offset}.bin"
            value = sample("FileState") | {"key": key, "path": key[7:], "state": "DONE"}
            value |= {"size": size, "ingested": True, "deleted": True, "reason": None}
            records.append((0, self.offset, key, value))
            self.offset += 1
        index = StatusIndex(self.path)
        try:
            index.apply(records)
        finally:
            index.close()


def behind(group: str, messages: int, seconds: float) -> PartitionLag:
    return PartitionLag(group, "terra.files.transferred", 0, 100, 100 + messages, messages, seconds)


def part(line: str, starts: str) -> str:
    [found] = [p for p in line.split(" | ") if p.startswith(starts) or p.endswith(starts)]
    return found


def test_every_line_ten_seconds_apart_shows_bytes_and_lag_as_they_are_now(
    progress: Progress, config: Config, clock: Clock, lag: Lag
) -> None:
    files = Files(config)
    ingest = config.group("ingest")
    assert part(progress.line({}), "files/s") == "0 files/s"  # the first line: the baseline
    clock.now += 10
    files.done(progress, 20, MB // 2)
    lag.rows = [behind(ingest, 501, 1800.0), behind(config.group("deleter"), 0, 0.0)]
    first = progress.line({})
    assert part(first, "MB moved") == "10.0 MB moved"
    assert part(first, "files/s") == "2 files/s"
    assert part(first, "lag ") == "lag ingest:501/30m"
    assert part(first, "dead letters") == "dead letters 2"
    clock.now += 10
    files.done(progress, 30, MB // 2)
    lag.rows = [behind(ingest, 0, 0.0)]
    second = progress.line({})
    assert part(second, "MB moved") == "25.0 MB moved"
    assert part(second, "files/s") == "3 files/s"
    assert part(second, "lag ") == "lag 0"
    clock.now += 10
    third = progress.line({})
    assert part(third, "files/s") == "0 files/s"
    assert lag.calls == 4


def test_files_done_before_this_run_do_not_count_as_its_rate(config: Config, lag: Lag) -> None:
    clock = Clock()
    earlier = Progress(config, clock=clock)
    try:
        Files(config).done(earlier, 50, MB)
    finally:
        earlier.close()
    now = Progress(config, clock=clock)
    try:
        clock.now += 10
        line = now.line({})
    finally:
        now.close()
    assert part(line, "files/s") == "0 files/s"
    assert part(line, "MB moved") == "50.0 MB moved"
    assert "DONE=50" in line


def test_on_a_terminal_the_costly_part_is_read_at_most_every_few_seconds(
    progress: Progress, clock: Clock, lag: Lag
) -> None:
    for _ in range(int(SLOW_EVERY_S) * 3):
        clock.now += 1
        progress.line({})
    assert lag.calls == 3


def test_a_broker_away_shows_in_the_line_and_is_asked_again_later(
    progress: Progress, clock: Clock, lag: Lag
) -> None:
    lag.error = TransientError("reading the offsets of consumer group terra.ingest: timed out")
    assert "waiting for Kafka: reading the offsets" in progress.line({"ingest": "retrying"})
    lag.error = None
    clock.now += SLOW_EVERY_S
    line = progress.line({})
    assert part(line, "lag ") == "lag 0"
    assert lag.calls == 2


def test_lag_text_names_only_the_stages_behind() -> None:
    lags = {
        "batcher": GroupLag(0, 0.0),
        "ingest": GroupLag(501, 1800.0),
        "deleter": GroupLag(2, 4.0),
        "monitor": GroupLag(7, 3 * 3600.0),
    }
    assert lag_text(lags) == "lag ingest:501/30m deleter:2/4s monitor:7/3h"
    assert lag_text({"batcher": GroupLag(0, 0.0)}) == "lag 0"
    assert lag_text({}) == "lag 0"
