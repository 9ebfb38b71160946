"""The Danforth producer polls ahead: the next plan's images are made while the oldest plan is
committed, plans are committed in id order and once each, and whatever fails drops every plan in
flight so the next poll starts again from the committed position (nothing skipped)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from producers.danforth import materialise
from producers.danforth.blobs import blob_path, read_frame
from producers.danforth.errors import BlobStoreError
from producers.danforth.progress import Position
from producers.danforth.records import Snapshot, Tile
from producers.danforth.service import DanforthProducer
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.stages import registry
from terra_xfer.stages.outputs import Output
from tests.fakes import Clock, offline
from tests.lemnatec import frame_bytes, write_blob

TAKEN = datetime(2017, 6, 28, 9, 0, 0)
CAMERAS = ("VIS=16x12", "NIR=8x6")
LABELS = ("VIS_SV_0_z1_h1_g0_e82", "VIS_TV_z1_h1_g0_e82", "NIR_SV_0_z1_h1_g0_e35")


class SiteDb:
    """Completed snapshots in memory, answering the producer's queries as LemnaTecDb does."""

    database = "LTSystem"

    def __init__(self, snapshots: Sequence[Snapshot]) -> None:
        self.rows = {s.id: s for s in snapshots}

    def newer(self, after_id: int, limit: int) -> list[Snapshot]:
        ids = sorted(i for i in self.rows if i > after_id)[:limit]
        return [dataclasses.replace(self.rows[i], tiles=()) for i in ids]

    def by_id(self, ids: Sequence[int]) -> list[Snapshot]:
        return [dataclasses.replace(self.rows[i], tiles=()) for i in sorted(ids) if i in self.rows]

    def with_tiles(self, snapshots: Sequence[Snapshot]) -> list[Snapshot]:
        return [self.rows[s.id] for s in snapshots]

    def close(self) -> None:
        pass


def site(root: Path, count: int) -> list[Snapshot]:
    """``count`` completed snapshots of three images each, with their blobs under ``root``."""
    snapshots = []
    for sid in range(1, count + 1):
        taken = TAKEN + timedelta(seconds=3 * sid)
        tiles = []
        for j, label in enumerate(LABELS):
            oid = 100 * sid + j
            size = (16, 12) if label.startswith("VIS") else (8, 6)
            write_blob(blob_path(root, "LTSystem", taken, oid), frame_bytes(label, 0, size, oid))
            tiles.append(Tile(sid, 10 * sid + j, label, 0, oid, 0, 0))
        snapshots.append(
            Snapshot(sid, f"P{sid}", "car", taken, 1.0, 2.0, 1.0, "x", True, tuple(tiles))
        )
    return snapshots


@pytest.fixture
def config(tmp_path: Path) -> Config:
    danforth = dataclasses.replace(
        Config().danforth,
        cache_root=tmp_path / "cache",
        blob_root=tmp_path / "blobs",
        cameras=CAMERAS,
        chunk_snapshots=2,
        workers=3,
    )
    return offline(danforth=danforth)


@pytest.fixture
def producer(config: Config, tmp_path: Path) -> Iterator[DanforthProducer]:
    db = SiteDb(site(tmp_path / "blobs", 7))
    made = DanforthProducer(config, registry.spec("danforth"), db=db, clock=Clock())  # type: ignore[arg-type]
    made.position = Position()  # as if started: no Kafka needed to poll
    try:
        yield made
    finally:
        made.close()
        made.kafka.close()


class Commits:
    """Stands for the producer's transactions: records each one's snapshots and the plans in
    flight when it was committed; ``fail`` makes the next one fail as a lost broker would."""

    def __init__(self, producer: DanforthProducer) -> None:
        self.producer = producer
        self.snapshots: list[list[int]] = []
        self.in_flight: list[int] = []
        self.fail = False

    def __call__(self, outputs: Sequence[Output]) -> None:
        if self.fail:
            self.fail = False
            raise TransientError("the broker went away mid-transaction")
        keys = [str(o.key) for o in outputs if str(o.key).endswith("_metadata.json")]
        self.snapshots.append([int(k.split("/")[1].removeprefix("snapshot")) for k in keys])
        self.in_flight.append(len(self.producer.in_flight))


def steps(producer: DanforthProducer) -> list[int]:
    shipped = []
    while count := producer.step():
        shipped.append(count)
    return shipped


def poll_errors() -> float:
    return metrics.REGISTRY.get_sample_value("terra_xfer_danforth_poll_errors_total") or 0.0


def test_the_next_plan_is_made_while_the_oldest_is_committed_in_order(
    producer: DanforthProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = Commits(producer)
    monkeypatch.setattr(producer.kafka, "commit", commits)
    assert steps(producer) == [2, 2, 2, 1]
    assert commits.snapshots == [[1, 2], [3, 4], [5, 6], [7]]
    # Each commit but the last found the next plan already queued on the pool.
    assert commits.in_flight == [2, 2, 2, 1]
    assert producer.position == Position(7, {}) and not producer.in_flight
    assert producer.events == 7 * 4  # a metadata file and three images per snapshot


def test_a_failed_commit_drops_every_plan_in_flight_and_skips_nothing(
    producer: DanforthProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = Commits(producer)
    monkeypatch.setattr(producer.kafka, "commit", commits)
    assert producer.step() == 2
    commits.fail = True
    with pytest.raises(TransientError, match="went away"):
        producer.step()  # the host retries after its backoff
    assert not producer.in_flight and producer.position == Position(2, {})
    assert steps(producer) == [2, 2, 1]
    assert commits.snapshots == [[1, 2], [3, 4], [5, 6], [7]]


def test_a_blob_store_lost_mid_plan_drops_every_plan_and_polls_again_after_poll_s(
    producer: DanforthProducer, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = Commits(producer)
    monkeypatch.setattr(producer.kafka, "commit", commits)
    lost = {300}  # snapshot 3's first image: read while snapshots 1 and 2 are committed

    def flaky(path: Path) -> bytes:
        if path.name.removeprefix("blob") in {str(oid) for oid in lost}:
            lost.clear()
            raise BlobStoreError(f"blob {path} cannot be read now: stale file handle")
        return read_frame(path)

    monkeypatch.setattr(materialise, "read_frame", flaky)  # as the pool threads call it
    before = poll_errors()
    assert producer.step() == 2
    assert producer.step() == 0  # snapshots 3 and 4 are dropped, and 5 and 6 behind them
    assert not producer.in_flight and producer.position == Position(2, {})
    assert poll_errors() - before == 1
    assert producer.step() == 0  # within poll_s: not polled again
    assert isinstance(producer.clock, Clock)
    producer.clock.now += config.danforth.poll_s
    assert steps(producer) == [2, 2, 1]
    assert commits.snapshots == [[1, 2], [3, 4], [5, 6], [7]]
