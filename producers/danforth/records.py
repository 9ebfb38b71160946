"""The LemnaTec database rows the producer reads, as plain values (no database access here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Tile:
    """One image of a snapshot: a ``tile`` row joined with its ``tiled_image``."""

    snapshot_id: int
    tiled_image_id: int
    camera_label: str
    frame: int
    raw_image_oid: int
    rotate_flip_type: int | None
    dataformat: int | None


@dataclass(frozen=True)
class Snapshot:
    """One ``snapshot`` row; ``completed`` is its ``propagated`` flag, ``tiles`` its images."""

    id: int
    id_tag: str | None
    car_tag: str | None
    time_stamp: datetime | None
    weight_before: float | None
    weight_after: float | None
    water_amount: float | None
    measurement_label: str | None
    completed: bool
    tiles: tuple[Tile, ...] = ()

    @property
    def taken(self) -> datetime:
        """The snapshot's time; a snapshot without one is given up, never shipped."""
        if self.time_stamp is None:
            raise ValueError(f"snapshot {self.id} has no time_stamp")
        return self.time_stamp
