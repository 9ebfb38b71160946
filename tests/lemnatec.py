"""A generated LemnaTec site for tests and the bench: the database's tables, snapshots and blobs.

``LemnaTecSite`` creates the three tables the producer reads (``snapshot``, ``tiled_image``,
``tile``) in a PostgreSQL database, adds snapshots of ten images each (five visible, five NIR, as
the seed's snapshots had), watering jobs without images, and writes each image's blob where the
LemnaTec server keeps it: a zip whose member ``data`` is the raw frame. Some blobs can be made
missing or corrupt on purpose; :class:`Planned` says what the producer should make of each one.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from producers.danforth.blobs import blob_path
from producers.danforth.lemnatec import database_name
from producers.danforth.materialise import image_name
from terra_xfer.config import Config, Secret
from tests.postgres import PostgresServer

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot (
    id bigint PRIMARY KEY,
    id_tag text,
    car_tag text,
    time_stamp timestamp without time zone,
    weight_before double precision,
    weight_after double precision,
    water_amount double precision,
    propagated boolean NOT NULL DEFAULT false,
    measurement_label text
);
CREATE TABLE IF NOT EXISTS tiled_image (
    id bigint PRIMARY KEY,
    snapshot_id bigint NOT NULL REFERENCES snapshot(id),
    camera_label text NOT NULL
);
CREATE TABLE IF NOT EXISTS tile (
    id bigserial PRIMARY KEY,
    tiled_image_id bigint NOT NULL REFERENCES tiled_image(id),
    raw_image_oid bigint NOT NULL,
    frame integer NOT NULL,
    rotate_flip_type integer NOT NULL DEFAULT 0,
    dataformat integer NOT NULL DEFAULT 0
);
"""
LABELS = (
    "VIS_SV_0_z1_h1_g0_e82",
    "VIS_SV_90_z1_h1_g0_e82",
    "VIS_SV_180_z1_h1_g0_e82",
    "VIS_SV_270_z1_h1_g0_e82",
    "VIS_TV_z1_h1_g0_e82",
    "NIR_SV_0_z1_h1_g0_e35",
    "NIR_SV_90_z1_h1_g0_e35",
    "NIR_SV_180_z1_h1_g0_e35",
    "NIR_SV_270_z1_h1_g0_e35",
    "NIR_TV_z1_h1_g0_e35",
)
# A snapshot as the Scanalyzer's usual programme takes it: mostly VIS side views (five angles) and
# a top view, NIR side and top, and two fluorescence (PSII) frames. The benchmark's composition.
SEED_LABELS = (
    "VIS_SV_0_z1_h1_g0_e82",
    "VIS_SV_72_z1_h1_g0_e82",
    "VIS_SV_144_z1_h1_g0_e82",
    "VIS_SV_216_z1_h1_g0_e82",
    "VIS_SV_288_z1_h1_g0_e82",
    "VIS_TV_z1_h1_g0_e82",
    "NIR_SV_0_z1_h1_g0_e35",
    "NIR_TV_z1_h1_g0_e35",
    "PSII_SV_0_z1_h1_g0_e35",
    "PSII_TV_z1_h1_g0_e35",
)
SMALL_CAMERAS = ("VIS=16x12", "NIR=8x6", "PSII=8x6")
START = datetime(2017, 6, 28, 9, 0, 0, 123000)
STEP = timedelta(seconds=3)  # between snapshots: thousands of them still fit in one day
# How a blob is spoiled, and the words the producer's reason for it must contain.
SPOILED = {"missing": "is missing", "truncated": "bytes; a", "not_zip": "not a readable zip"}


@dataclass
class Planned:
    """What one generated snapshot should become: images shipped, images dead-lettered."""

    id: int
    images: list[str] = field(default_factory=list)
    spoiled: dict[str, str] = field(default_factory=dict)  # file name -> reason words

    @property
    def watering(self) -> bool:
        return not self.images and not self.spoiled

    def files(self) -> list[str]:
        """Cache paths of everything shipped: the metadata file and the good images."""
        return [f"snapshot{self.id}/snapshot{self.id}_metadata.json"] + [
            f"snapshot{self.id}/{name}" for name in self.images
        ]


@dataclass
class Rows:
    """Generated rows of the three tables, and what they should become."""

    planned: list[Planned] = field(default_factory=list)
    snapshots: list[tuple[Any, ...]] = field(default_factory=list)
    images: list[tuple[Any, ...]] = field(default_factory=list)
    tiles: list[tuple[Any, ...]] = field(default_factory=list)


def sizes_of(cameras: Iterable[str]) -> dict[str, tuple[int, int]]:
    """``PREFIX=WxH`` entries as a dict (the generator's view of ``[danforth] cameras``)."""
    out = {}
    for entry in cameras:
        prefix, size = entry.split("=")
        w, h = size.lower().split("x")
        out[prefix] = (int(w), int(h))
    return out


def frame_bytes(label: str, dataformat: int, size: tuple[int, int], seed: int) -> bytes:
    """A plausible raw frame: a smooth scene with some noise (VIS 8-bit, NIR 8 or 12-in-16, PSII
    14-in-16)."""
    w, h = size
    rng = np.random.default_rng(seed)
    # A row and a column broadcast: the same values as full index grids, a tenth of the time.
    ramp = (np.arange(w)[np.newaxis, :] * 3 + np.arange(h)[:, np.newaxis] * 2 + seed) % 200
    scene = ramp + rng.integers(0, 16, (h, w))
    if label.startswith("NIR") and dataformat == 4:
        return bytes((scene * 16).astype("<u2").tobytes())
    if label.startswith("PSII"):
        return bytes((scene * 64).astype("<u2").tobytes())
    return bytes(scene.astype(np.uint8).tobytes())


def write_blob(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("data", data)


class LemnaTecSite:
    """One LemnaTec database (tables and rows) with its blob directory."""

    def __init__(self, conn: psycopg.Connection[Any], blob_root: Path, database: str) -> None:
        self.conn = conn
        self.blob_root = blob_root
        self.database = database
        self.next_snapshot = 1
        self.next_image = 1_090_600
        self.next_oid = 5_000_000
        # (camera, dataformat, size) -> the first good blob written of it (repeat_frames)
        self._first_blobs: dict[tuple[str, int, tuple[int, int]], Path] = {}
        conn.execute(SCHEMA)
        (self.blob_root / database).mkdir(parents=True, exist_ok=True)

    def add(
        self,
        count: int,
        cameras: Iterable[str] = SMALL_CAMERAS,
        *,
        watering_every: int = 0,
        spoil: dict[tuple[int, int], str] | None = None,
        completed: bool = True,
        repeat_frames: bool = False,
    ) -> list[Planned]:
        """Add ``count`` snapshots; ``spoil`` maps (snapshot index, image index) to a SPOILED kind.
        ``repeat_frames``: every good blob of a camera and format is a hard link to its first
        one (many large frames in little time; each image is still read and made on its own)."""
        rows = self.prepare(
            count,
            cameras,
            watering_every=watering_every,
            spoil=spoil,
            completed=completed,
            repeat_frames=repeat_frames,
        )
        self.insert(rows)
        return rows.planned

    def prepare(
        self,
        count: int,
        cameras: Iterable[str] = SMALL_CAMERAS,
        *,
        watering_every: int = 0,
        spoil: dict[tuple[int, int], str] | None = None,
        completed: bool = True,
        labels: tuple[str, ...] = LABELS,
        repeat_frames: bool = False,
    ) -> Rows:
        """Write the blobs of ``count`` snapshots and return their rows, not inserted yet."""
        sizes = sizes_of(cameras)
        spoil = spoil or {}
        rows = Rows()
        for i in range(count):
            sid = self.next_snapshot
            self.next_snapshot += 1
            taken = START + STEP * sid
            plan = Planned(sid)
            rows.planned.append(plan)
            rows.snapshots.append(_snapshot_row(sid, taken, completed))
            if watering_every and i % watering_every == watering_every - 1:
                continue
            for j, label in enumerate(labels):
                image, tile = self._image(
                    plan, taken, label, j, sizes, spoil.get((i, j)), repeat_frames
                )
                rows.images.append(image)
                rows.tiles.append(tile)
        return rows

    def insert(self, rows: Rows) -> None:
        """Insert prepared rows in one transaction: the producer sees all of them or none."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO snapshot VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows.snapshots
            )
            cur.executemany("INSERT INTO tiled_image VALUES (%s,%s,%s)", rows.images)
            cur.executemany(
                "INSERT INTO tile (tiled_image_id, raw_image_oid, frame, rotate_flip_type,"
                " dataformat) VALUES (%s,%s,%s,%s,%s)",
                rows.tiles,
            )

    def complete(self, ids: Iterable[int]) -> None:
        self.conn.execute("UPDATE snapshot SET propagated = true WHERE id = ANY(%s)", (list(ids),))

    def close(self) -> None:
        self.conn.close()

    def _image(
        self,
        plan: Planned,
        taken: datetime,
        label: str,
        index: int,
        sizes: dict[str, tuple[int, int]],
        spoiled: str | None,
        repeat_frames: bool = False,
    ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        image_id, oid = self.next_image, self.next_oid
        self.next_image += 1
        self.next_oid += 1
        dataformat = 4 if label.startswith("NIR") and index % 2 else 0
        rotate = 1 if index == 4 else 0
        name = image_name(label, image_id, 0)
        path = blob_path(self.blob_root, self.database, taken, oid)
        camera = label.split("_")[0]
        if spoiled is None:
            kind = (camera, dataformat, sizes[camera])
            first = self._first_blobs.get(kind) if repeat_frames else None
            if first is None:
                write_blob(path, frame_bytes(label, dataformat, sizes[camera], oid))
                self._first_blobs.setdefault(kind, path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.link(first, path)
            plan.images.append(name)
        else:
            _spoil(path, frame_bytes(label, dataformat, sizes[camera], oid), spoiled)
            plan.spoiled[name] = SPOILED[spoiled]
        return (image_id, plan.id, label), (image_id, oid, 0, rotate, dataformat)


def _snapshot_row(sid: int, taken: datetime, completed: bool) -> tuple[Any, ...]:
    barcode = f"Fp{sid % 7:03d}A{'AB'[sid % 2]}{sid:06d}"
    weight = 400.0 + sid % 50
    return (sid, barcode, f"car{sid % 40}", taken, weight, weight + 80.5, 80.5, completed, "exp-9")


def _spoil(path: Path, data: bytes, how: str) -> None:
    if how == "truncated":
        write_blob(path, data[: len(data) // 2])
    elif how == "not_zip":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"this is no zip archive" * 4)
    elif how != "missing":
        raise ValueError(f"unknown spoil kind {how!r}")


def danforth_config(
    config: Config,
    server: PostgresServer,
    database: str,
    root: Path,
    cameras: tuple[str, ...] = SMALL_CAMERAS,
    **danforth: Any,
) -> Config:
    """``config`` with ``[danforth]`` pointing at ``database`` on ``server`` and blobs and cache
    under ``root``; the password as the environment would give it."""
    section = dataclasses.replace(
        config.danforth,
        dsn=server.dsn(database),
        password=Secret(server.password),
        blob_root=root / "blobs",
        cache_root=root / "danforth",
        cameras=cameras,
        **({"poll_s": 0.2, "chunk_snapshots": 5} | danforth),
    )
    return dataclasses.replace(config, danforth=section)


def new_site(server: PostgresServer, config: Config) -> LemnaTecSite:
    """A fresh database for ``config``'s ``[danforth] dsn``, with the LemnaTec tables."""
    database = database_name(config.danforth.dsn)
    server.create_database(database)
    return LemnaTecSite(server.connect(database), config.danforth.blob_root, database)
