"""Snapshot and image metadata as the original Danforth uploader recorded it (pure, no I/O).

The plant barcode encodes species ``[0:2]``, genotype ``[0:5]``, treatment ``[5:7]`` and the
plant's own id ``[7:]``. A camera label encodes the image: ``VIS_SV_90_z1_h1_g0_e82`` is a visible
side-view at 90 degrees, zoom 1, lifter height 1, gain 0, exposure 82; top views
(``NIR_TV_z1_h1_g0_e35``) have no rotation. Keys follow the original uploader's names
(``camera_type``, ``perspective``, ``imager_stage_vertical_position`` ...) so this catalog
continues the one it built; a label that does not follow the pattern leaves those keys null.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from producers.danforth.cameras import FrameSpec
from producers.danforth.records import Snapshot, Tile

CAMERA_TYPES = {"VIS": "visible/RGB", "NIR": "near-infrared", "PSII": "fluorescence"}
PERSPECTIVES = {"SV": "side-view", "TV": "top-view"}
_SETTING = re.compile(r"([zhge])(-?\d+)")


@dataclass(frozen=True)
class Barcode:
    species: str
    genotype: str
    treatment: str
    unique_id: str


@dataclass(frozen=True)
class CameraLabel:
    """What a camera label says; ``None`` where it says nothing."""

    image_type: str
    perspective: str | None
    rotation_angle: int | None
    zoom: int | None
    lifter_height: int | None
    gain: int | None
    exposure: int | None


@dataclass(frozen=True)
class Missing:
    """An image of the snapshot that could not be made, and why."""

    name: str
    reason: str


def parse_barcode(code: str) -> Barcode:
    return Barcode(code[0:2], code[0:5], code[5:7], code[7:])


def parse_camera_label(label: str) -> CameraLabel:
    tokens = label.split("_")
    image_type = tokens[0].upper()
    perspective = (
        tokens[1].upper() if len(tokens) > 1 and tokens[1].upper() in PERSPECTIVES else None
    )
    rest = tokens[2:] if perspective else tokens[1:]
    rotation = None
    if perspective == "SV" and rest and re.fullmatch(r"-?\d+", rest[0]):
        rotation, rest = int(rest[0]), rest[1:]
    elif perspective == "TV":
        rotation = 0
    settings = {m[1]: int(m[2]) for t in rest if (m := _SETTING.fullmatch(t))}
    return CameraLabel(
        image_type,
        perspective,
        rotation,
        settings.get("z"),
        settings.get("h"),
        settings.get("g"),
        settings.get("e"),
    )


def timestamp_text(taken: datetime) -> str:
    """``YYYY-MM-DD hh:mm:ss.mmm``: the snapshot's time as the uploader wrote it (to the ms)."""
    return taken.strftime("%Y-%m-%d %H:%M:%S.") + f"{taken.microsecond // 1000:03d}"


def timestamp_dir(taken: datetime) -> str:
    """``YYYY-MM-DD__hh-mm-ss-mmm``: the snapshot's time as a timestamp directory names it."""
    return taken.strftime("%Y-%m-%d__%H-%M-%S-") + f"{taken.microsecond // 1000:03d}"


def snapshot_metadata(
    snapshot: Snapshot, delivered: int, missing: Sequence[Missing]
) -> dict[str, Any]:
    """The snapshot's metadata: plant, car, weights, water, label, time, and its completeness."""
    code = snapshot.id_tag or ""
    barcode = parse_barcode(code)
    return {
        "snapshot_id": snapshot.id,
        "plant_barcode": snapshot.id_tag,
        "species": barcode.species or None,
        "genotype": barcode.genotype or None,
        "treatment": barcode.treatment or None,
        "sample_id": barcode.unique_id or None,
        "car_tag": snapshot.car_tag,
        "timestamp": timestamp_text(snapshot.taken),
        "weight_before": snapshot.weight_before,
        "weight_after": snapshot.weight_after,
        "water_amount": snapshot.water_amount,
        "measurement_label": snapshot.measurement_label,
        "watering_job": not snapshot.tiles,
        "images_expected": len(snapshot.tiles),
        "images": delivered,
        "complete": not missing,
        "missing_images": [{"file": m.name, "reason": m.reason} for m in missing],
    }


def image_metadata(snapshot: Snapshot, tile: Tile, spec: FrameSpec) -> dict[str, Any]:
    """One image's metadata: what the camera label says, and the tile's own settings."""
    label = parse_camera_label(tile.camera_label)
    return {
        "snapshot_id": snapshot.id,
        "plant_barcode": snapshot.id_tag,
        "image_id": tile.tiled_image_id,
        "frame": tile.frame,
        "camera_label": tile.camera_label,
        "image_type": label.image_type,
        "camera_type": CAMERA_TYPES.get(str(spec.kind)),
        "perspective": PERSPECTIVES.get(label.perspective or ""),
        "rotation_angle": label.rotation_angle,
        "zoom": label.zoom,
        "imager_stage_vertical_position": label.lifter_height,
        "camera_gain": label.gain,
        "camera_exposure": label.exposure,
        "rotate_flip_type": tile.rotate_flip_type,
        "dataformat": tile.dataformat,
        "width": spec.width,
        "height": spec.height,
        "imagedate": timestamp_text(snapshot.taken),
    }
