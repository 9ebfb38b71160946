"""Danforth metadata, names, the poll plan and the events (pure parts, no database, no broker)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from producers.danforth.cache_writes import CacheFile
from producers.danforth.cameras import FrameSpec, Kind
from producers.danforth.errors import ImageError
from producers.danforth.events import arrivals, epoch_ms, image_dead_letter
from producers.danforth.materialise import Failure, Made, image_name
from producers.danforth.metadata import (
    Missing,
    image_metadata,
    parse_barcode,
    parse_camera_label,
    snapshot_metadata,
    timestamp_dir,
    timestamp_text,
)
from producers.danforth.progress import MAX_GAP, Position, plan
from producers.danforth.records import Snapshot, Tile
from terra_xfer.sites.danforth import DanforthPath, danforth_path
from terra_xfer.sites.gantry import PathRejected

TAKEN = datetime(2017, 6, 28, 23, 48, 28, 435123)
TILE = Tile(7, 1090617, "VIS_SV_90_z1_h1_g0_e82", 0, 4242, 0, 0)
SNAP = Snapshot(7, "Fp001AA000123", "car-12", TAKEN, 512.5, 601.0, 88.5, "exp-1", True, (TILE,))


def snap(sid: int, completed: bool = True, taken: datetime | None = TAKEN) -> Snapshot:
    return replace(SNAP, id=sid, completed=completed, time_stamp=taken)


def test_barcode_parts() -> None:
    code = parse_barcode("Fp001AA000123")
    assert (code.species, code.genotype, code.treatment, code.unique_id) == (
        "Fp",
        "Fp001",
        "AA",
        "000123",
    )
    assert parse_barcode("Fp0").treatment == ""


def test_side_and_top_view_labels() -> None:
    side = parse_camera_label("VIS_SV_90_z1_h2_g0_e82")
    assert (side.image_type, side.perspective, side.rotation_angle) == ("VIS", "SV", 90)
    assert (side.zoom, side.lifter_height, side.gain, side.exposure) == (1, 2, 0, 82)
    top = parse_camera_label("NIR_TV_z500_h1_g10_e35")
    assert (top.perspective, top.rotation_angle, top.zoom, top.exposure) == ("TV", 0, 500, 35)
    odd = parse_camera_label("PSII_PS1_MAX")
    assert (odd.image_type, odd.perspective, odd.zoom) == ("PSII", None, None)


def test_timestamps_to_the_millisecond() -> None:
    assert timestamp_text(TAKEN) == "2017-06-28 23:48:28.435"
    assert timestamp_dir(TAKEN) == "2017-06-28__23-48-28-435"


def test_snapshot_metadata_says_whether_it_is_complete() -> None:
    whole = snapshot_metadata(SNAP, 1, [])
    assert whole["complete"] is True and whole["missing_images"] == []
    assert whole["species"] == "Fp" and whole["genotype"] == "Fp001"
    assert whole["treatment"] == "AA" and whole["sample_id"] == "000123"
    assert whole["timestamp"] == "2017-06-28 23:48:28.435"
    assert (whole["weight_before"], whole["water_amount"], whole["car_tag"]) == (
        512.5,
        88.5,
        "car-12",
    )
    assert whole["measurement_label"] == "exp-1" and whole["watering_job"] is False
    part = snapshot_metadata(SNAP, 0, [Missing("x.png", "blob is missing")])
    assert part["complete"] is False and part["images"] == 0 and part["images_expected"] == 1
    assert part["missing_images"] == [{"file": "x.png", "reason": "blob is missing"}]
    water = snapshot_metadata(replace(SNAP, tiles=(), id_tag=None), 0, [])
    assert water["watering_job"] is True and water["species"] is None


def test_image_metadata() -> None:
    meta = image_metadata(SNAP, TILE, FrameSpec(Kind.VIS, 8, 6, 1))
    assert meta["camera_type"] == "visible/RGB" and meta["perspective"] == "side-view"
    assert meta["rotation_angle"] == 90 and meta["imager_stage_vertical_position"] == 1
    assert (meta["camera_gain"], meta["camera_exposure"], meta["zoom"]) == (0, 82, 1)
    assert (meta["image_id"], meta["frame"], meta["width"], meta["height"]) == (1090617, 0, 8, 6)
    assert meta["imagedate"] == "2017-06-28 23:48:28.435"


def test_image_names_and_cache_paths() -> None:
    assert image_name("VIS_SV_0_z1_h1_g0_e82", 1090617, 0) == "VIS_SV_0_z1_h1_g0_e82_1090617_0.png"
    for bad in ("", ".hidden", "a/b", "a\\b"):
        with pytest.raises(ImageError, match="cannot name a file"):
            image_name(bad, 1, 0)
    found = danforth_path("snapshot7/VIS_SV_0_1_0.png", "danforth")
    assert found == DanforthPath(
        "snapshot7/VIS_SV_0_1_0.png",
        "danforth",
        7,
        "VIS_SV_0_1_0.png",
        "sites/danforth/raw_data/ddpscIndoorSuite/snapshot7/VIS_SV_0_1_0.png",
    )
    assert danforth_path("snapshot7/snapshot7_metadata.json", "danforth").is_metadata  # type: ignore[union-attr]
    for bad in ("x.png", "snapshot7/", "snapshotX/a.png", "snapshot7/a/b.png", "snapshot7/.a.part"):
        assert isinstance(danforth_path(bad, "danforth"), PathRejected), bad


def test_plan_emits_completed_and_waits_for_the_rest() -> None:
    start = Position()
    todo = plan(start, [snap(1), snap(2, completed=False), snap(3)], [], 1000, 10_000)
    assert [s.id for s in todo.ready] == [1, 3]
    assert todo.position == Position(3, {2: 1000})
    later = plan(todo.position, [snap(4)], [snap(2, completed=True)], 5000, 10_000)
    assert [s.id for s in later.ready] == [2, 4] and later.position == Position(4, {})
    assert Position.from_dict(json.loads(json.dumps(todo.position.to_dict()))) == todo.position


def test_plan_gives_up_after_the_wait_and_forgets_absent_ids() -> None:
    waiting = Position(10, {4: 0, 5: 0, 6: 15_000})
    todo = plan(waiting, [], [snap(4, completed=False)], 20_000, 10_000)
    assert [g.snapshot.id for g in todo.given_up] == [4]
    assert "not completed within 20 s" in todo.given_up[0].reason
    assert todo.position == Position(10, {6: 15_000}) and todo.changed  # 5 never appeared
    nothing = plan(Position(10), [snap(9), snap(10)], [], 1, 10)
    assert not nothing.changed and nothing.position == Position(10)


def test_plan_waits_for_ids_skipped_over() -> None:
    """An id below one already seen may become visible later (its transaction committed later)."""
    todo = plan(Position(3), [snap(4), snap(7)], [], 100, 10_000)
    assert [s.id for s in todo.ready] == [4, 7]
    assert todo.position == Position(7, {5: 100, 6: 100})
    late = plan(todo.position, [], [snap(6)], 200, 10_000)
    assert [s.id for s in late.ready] == [6] and late.position == Position(7, {5: 100})
    first = plan(Position(), [snap(5000)], [], 1, 10)  # a database with a history: no gap
    jump = plan(Position(10), [snap(10 + MAX_GAP + 1)], [], 1, 10)
    assert first.position.waiting == {} and jump.position.waiting == {}


def test_plan_gives_up_a_snapshot_without_time() -> None:
    todo = plan(Position(), [snap(1, taken=None), snap(2)], [], 1, 10)
    assert [s.id for s in todo.ready] == [2]
    assert [g.reason for g in todo.given_up] == ["snapshot 1 has no time_stamp"]


def made_snapshot() -> Made:
    meta_file = CacheFile("snapshot7/snapshot7_metadata.json", 100, 5, None)
    image = CacheFile("snapshot7/VIS_SV_90_z1_h1_g0_e82_1090617_0.png", 200, 6, {"frame": 0})
    bad_tile = replace(TILE, tiled_image_id=99)
    failure = Failure(bad_tile, "VIS_x_99_0.png", Path("/b/blob1"), ImageError("missing", "gone"))
    metadata = snapshot_metadata(SNAP, 1, [Missing("VIS_x_99_0.png", "gone")])
    return Made(SNAP, metadata, meta_file, [image], [failure])


def test_arrivals_metadata_first_with_deterministic_ids() -> None:
    values = arrivals(made_snapshot(), "danforth", "LTSystem", "America/Chicago", 123)
    assert [v["path"] for v in values] == [
        "snapshot7/snapshot7_metadata.json",
        "snapshot7/VIS_SV_90_z1_h1_g0_e82_1090617_0.png",
    ]
    first, image = values
    assert first["event_id"] == "danforth:LTSystem:7:snapshot7_metadata.json"
    assert image["key"] == "danforth/snapshot7/VIS_SV_90_z1_h1_g0_e82_1090617_0.png"
    assert image["dest_path"] == (
        "sites/danforth/raw_data/ddpscIndoorSuite/snapshot7/VIS_SV_90_z1_h1_g0_e82_1090617_0.png"
    )
    assert (image["version"], image["source"], image["sensor"]) == (
        "200:6",
        "DANFORTH",
        "ddpscIndoorSuite",
    )
    assert (image["date"], image["timestamp"]) == ("2017-06-28", "2017-06-28__23-48-28-435")
    assert json.loads(first["dataset_metadata"])["complete"] is False
    assert first["dataset_metadata"] == image["dataset_metadata"]
    assert first["file_metadata"] is None and json.loads(image["file_metadata"]) == {"frame": 0}
    assert image["logged_ms"] == epoch_ms(TAKEN, "America/Chicago") == 1498711708435


def test_an_image_dead_letter_keeps_the_tile_row() -> None:
    letter = image_dead_letter(made_snapshot().failures[0], "danforth", 5)
    assert letter["reason"] == "gone" and letter["origin"] == "/b/blob1"
    assert letter["key"] == "danforth/snapshot7/VIS_x_99_0.png"
    assert json.loads(letter["raw"])["tiled_image_id"] == 99
