"""Making a snapshot's files from its blobs: PNGs, metadata JSON, dead images, leftovers."""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from producers.danforth import cache_writes
from producers.danforth.blobs import blob_path, check_store, read_frame
from producers.danforth.cache_writes import Unsynced
from producers.danforth.cameras import Cameras
from producers.danforth.errors import BlobStoreError, ImageError
from producers.danforth.frames import bayer_rg_to_rgb
from producers.danforth.materialise import Materialiser, Sources
from producers.danforth.records import Snapshot, Tile
from tests.lemnatec import frame_bytes, write_blob
from tests.pngread import read_png

TAKEN = datetime(2017, 6, 28, 9, 0, 0, 250000)
CAMERAS = ("VIS=6x4", "NIR=4x2")


@pytest.fixture
def materialiser(tmp_path: Path) -> Iterator[Materialiser]:
    sources = Sources(tmp_path / "blobs", "LTSystem", Cameras(CAMERAS))
    (tmp_path / "blobs" / "LTSystem").mkdir(parents=True)
    made = Materialiser(tmp_path / "cache", sources, png_level=6, workers=2)
    yield made
    made.close()


def snapshot(*tiles: Tile) -> Snapshot:
    return Snapshot(3, "Fp001AA000003", "car1", TAKEN, 1.0, 2.0, 1.0, "exp", True, tiles)


def blob(root: Path, oid: int) -> Path:
    return blob_path(root / "blobs", "LTSystem", TAKEN, oid)


def test_blob_reading(tmp_path: Path) -> None:
    path = tmp_path / "blob1"
    write_blob(path, b"frame")
    assert read_frame(path) == b"frame"
    with pytest.raises(ImageError, match="is missing") as missing:
        read_frame(tmp_path / "blob2")
    assert missing.value.kind == "missing"
    (tmp_path / "blob3").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ImageError, match="not a readable zip") as corrupt:
        read_frame(tmp_path / "blob3")
    assert corrupt.value.kind == "corrupt"
    with zipfile.ZipFile(tmp_path / "blob4", "w") as archive:
        archive.writestr("other", b"x")
    with pytest.raises(ImageError, match="no member 'data'"):
        read_frame(tmp_path / "blob4")
    assert blob_path(Path("/r"), "db", TAKEN, 9) == Path("/r/db/2017-06-28/blob9")


def test_a_deflated_frame_is_checked_as_zipfile_checks_it_and_a_stored_one_read_too(
    tmp_path: Path,
) -> None:
    frame = bytes(range(256)) * 4096  # 1 MiB
    deflated, stored = tmp_path / "deflated", tmp_path / "stored"
    write_blob(deflated, frame)
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("data", frame)
    assert read_frame(deflated) == frame and read_frame(stored) == frame
    info = zipfile.ZipFile(deflated).getinfo("data")
    spoilt = bytearray(deflated.read_bytes())
    spoilt[info.header_offset + 30 + len("data") + info.compress_size // 2] ^= 0xFF
    (tmp_path / "spoilt").write_bytes(bytes(spoilt))
    with pytest.raises(ImageError, match="not a readable zip") as corrupt:
        read_frame(tmp_path / "spoilt")
    assert corrupt.value.kind == "corrupt"


def test_an_absent_blob_store_is_transient(tmp_path: Path) -> None:
    with pytest.raises(BlobStoreError, match="not mounted"):
        check_store(tmp_path, "LTSystem")


def test_a_snapshot_becomes_pngs_and_its_metadata(
    tmp_path: Path, materialiser: Materialiser
) -> None:
    vis = Tile(3, 11, "VIS_SV_90_z1_h1_g0_e82", 0, 101, 0, 0)
    nir = Tile(3, 12, "NIR_TV_z1_h1_g0_e35", 0, 102, 1, 4)
    raw_vis = frame_bytes("VIS", 0, (6, 4), 1)
    raw_nir = frame_bytes("NIR", 4, (4, 2), 2)
    write_blob(blob(tmp_path, 101), raw_vis)
    write_blob(blob(tmp_path, 102), raw_nir)
    (made,) = materialiser.make([snapshot(vis, nir)])
    assert not made.failures and made.metadata["complete"] is True
    cache = tmp_path / "cache" / "snapshot3"
    assert sorted(p.name for p in cache.iterdir()) == [
        "NIR_TV_z1_h1_g0_e35_12_0.png",
        "VIS_SV_90_z1_h1_g0_e82_11_0.png",
        "snapshot3_metadata.json",
    ]
    png = read_png((cache / "VIS_SV_90_z1_h1_g0_e82_11_0.png").read_bytes())
    expected = bayer_rg_to_rgb(np.frombuffer(raw_vis, np.uint8).reshape(4, 6))
    assert png.colour_type == 2 and png.rows == [list(r.reshape(-1)) for r in expected]
    nir_png = read_png((cache / "NIR_TV_z1_h1_g0_e35_12_0.png").read_bytes())
    raw = np.frombuffer(raw_nir, "<u2").reshape(2, 4)
    assert nir_png.bit_depth == 16 and nir_png.rows == (raw[::-1, ::-1] * 16).tolist()
    on_disk = json.loads((cache / "snapshot3_metadata.json").read_text())
    assert on_disk == made.metadata and on_disk["images"] == 2
    image = made.images[0]
    assert image.size == (cache / Path(image.rel).name).stat().st_size
    assert image.metadata is not None and image.metadata["camera_type"] == "visible/RGB"


def test_bad_blobs_fail_alone_and_leftovers_go(tmp_path: Path, materialiser: Materialiser) -> None:
    good = Tile(3, 21, "NIR_SV_0_z1_h1_g0_e35", 0, 201, 0, 0)
    short = Tile(3, 22, "NIR_SV_90_z1_h1_g0_e35", 0, 202, 0, 0)
    absent = Tile(3, 23, "VIS_SV_0_z1_h1_g0_e82", 0, 203, 0, 0)
    write_blob(blob(tmp_path, 201), bytes(8))
    write_blob(blob(tmp_path, 202), bytes(7))
    cache = tmp_path / "cache" / "snapshot3"
    cache.mkdir(parents=True)
    (cache / ".NIR_SV_0_z1_h1_g0_e35_21_0.png.part").write_bytes(b"half")
    (cache / "VIS_SV_0_z1_h1_g0_e82_23_0.png").write_bytes(b"from an interrupted run")
    (made,) = materialiser.make([snapshot(good, short, absent)])
    assert [Path(i.rel).name for i in made.images] == ["NIR_SV_0_z1_h1_g0_e35_21_0.png"]
    reasons = {f.name: (f.error.kind, f.error.reason) for f in made.failures}
    assert reasons["NIR_SV_90_z1_h1_g0_e35_22_0.png"][0] == "corrupt"
    assert "holds 7 bytes" in reasons["NIR_SV_90_z1_h1_g0_e35_22_0.png"][1]
    assert reasons["VIS_SV_0_z1_h1_g0_e82_23_0.png"][0] == "missing"
    assert sorted(p.name for p in cache.iterdir()) == [
        "NIR_SV_0_z1_h1_g0_e35_21_0.png",
        "snapshot3_metadata.json",
    ]
    assert made.metadata["complete"] is False
    assert [m["file"] for m in made.metadata["missing_images"]] == sorted(reasons)


def test_a_watering_job_is_metadata_only(tmp_path: Path, materialiser: Materialiser) -> None:
    (made,) = materialiser.make([snapshot()])
    assert made.images == [] and made.metadata["watering_job"] is True
    assert made.metadata_file.rel == "snapshot3/snapshot3_metadata.json"


def test_a_missing_store_stops_the_snapshot_instead_of_losing_images(tmp_path: Path) -> None:
    sources = Sources(tmp_path / "unmounted", "LTSystem", Cameras(CAMERAS))
    made = Materialiser(tmp_path / "cache", sources, png_level=1, workers=1)
    try:
        with pytest.raises(BlobStoreError):
            made.make([snapshot(Tile(3, 1, "VIS_SV_0", 0, 1, 0, 0))])
    finally:
        made.close()
    assert not (tmp_path / "cache").exists()


def test_abandon_returns_only_once_no_write_of_the_plan_is_running(
    tmp_path: Path, materialiser: Materialiser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan made again after a failure must not race a write still running from the first."""
    disk = threading.Event()
    real = cache_writes.write_synced

    def slow(path: Path, data: bytes, buffer: object) -> None:
        assert disk.wait(30)
        real(path, data, buffer)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_writes, "write_synced", slow)
    tiles = [Tile(3, 11 + i, "VIS_SV_90_z1_h1_g0_e82", 0, 101 + i, 0, 0) for i in range(2)]
    for i in range(2):
        write_blob(blob(tmp_path, 101 + i), frame_bytes("VIS", 0, (6, 4), i))
    pending = materialiser.submit([snapshot(*tiles)])
    images = [f.result(timeout=30) for f in pending.images[0]]  # made, their writes held
    writes = [i.written for i in images if isinstance(i, Unsynced)]
    assert len(writes) == 2 and not any(w.done() for w in writes)
    # The disk is released a little after abandon is called: an abandon that did not wait would
    # return with the writes still held (a correct one passes whatever the delay).
    release = threading.Timer(0.2, disk.set)
    release.start()
    try:
        materialiser.abandon(pending)
        assert all(w.done() for w in writes)
    finally:
        disk.set()
        release.cancel()
