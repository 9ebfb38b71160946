"""Where Danforth files live in the cache and at the destination (pure, no I/O).

Each snapshot gets a directory ``snapshot<id>/`` under the Danforth cache root holding its images,
named as Danforth's extractor names them (``<camera label>_<tiled image id>_<frame>.png``), and
``snapshot<id>_metadata.json``. At the destination they go where the original pipeline put them:
``sites/<site>/raw_data/ddpscIndoorSuite/snapshot<id>/<file>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from terra_xfer.sites.gantry import PathRejected, RejectKind

SENSOR = "ddpscIndoorSuite"
METADATA_SUFFIX = "_metadata.json"
_REL = re.compile(r"snapshot(\d+)/([^/\x00]+)")


@dataclass(frozen=True)
class DanforthPath:
    """A file of one snapshot in the Danforth cache, and where it goes."""

    rel: str
    site: str
    snapshot_id: int
    name: str
    dest_rel: str

    @property
    def is_metadata(self) -> bool:
        return self.name == metadata_name(self.snapshot_id)


def snapshot_dir(snapshot_id: int) -> str:
    return f"snapshot{snapshot_id}"


def metadata_name(snapshot_id: int) -> str:
    return f"snapshot{snapshot_id}{METADATA_SUFFIX}"


def cache_rel(snapshot_id: int, name: str) -> str:
    return f"{snapshot_dir(snapshot_id)}/{name}"


def dest_rel(site: str, rel: str) -> str:
    return f"sites/{site}/raw_data/{SENSOR}/{rel}"


def danforth_path(rel: str, site: str) -> DanforthPath | PathRejected:
    """Classify a path relative to the Danforth cache root: a snapshot's file, or why not."""
    match = _REL.fullmatch(rel)
    if match is None:
        return PathRejected(
            RejectKind.UNRECOGNISED, f"path {rel!r} is not snapshot<id>/<file> of a Danforth cache"
        )
    name = match[2]
    if name.startswith("."):
        return PathRejected(RejectKind.HIDDEN, f"path {rel!r} names a hidden file")
    return DanforthPath(rel, site, int(match[1]), name, dest_rel(site, rel))
