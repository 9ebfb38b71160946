"""Making a snapshot's files in the Danforth cache: one PNG per image, then its metadata JSON.

Images are made in a thread pool (OpenCV, numpy and ISA-L release the GIL, so the cores share
the work), queued by :meth:`Materialiser.submit` and collected in order by
:meth:`Materialiser.finish`, so the next snapshots are made while earlier ones are committed.
Each file is written to a hidden temporary name, synced and renamed (:mod:`cache_writes`, on
threads of its own), so a file under its real name is always whole. An image that cannot be
made (missing or corrupt blob, unknown camera) is a :class:`Failure`; the others go on and the
snapshot's metadata says it is incomplete.

Only snapshots whose events are not committed yet are made here, so whatever their directories
hold from an earlier, interrupted run is nobody's: it is removed, and the files made again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.danforth.blobs import blob_path, check_store, read_frame
from producers.danforth.cache_writes import CacheFile, CacheWriter, Unsynced, settle, write_file
from producers.danforth.cameras import Cameras
from producers.danforth.errors import CacheWriteError, ImageError
from producers.danforth.frames import to_pixels
from producers.danforth.metadata import Missing, image_metadata, snapshot_metadata
from producers.danforth.png import encode_png
from producers.danforth.records import Snapshot, Tile
from terra_xfer.sites.danforth import cache_rel, metadata_name, snapshot_dir


@dataclass(frozen=True)
class Failure:
    """An image that could not be made: the tile, the file it would have been, and why."""

    tile: Tile
    name: str
    blob: Path
    error: ImageError


@dataclass(frozen=True)
class Made:
    """One snapshot's outcome: its metadata, the metadata file, the images and the failures."""

    snapshot: Snapshot
    metadata: dict[str, Any]
    metadata_file: CacheFile
    images: list[CacheFile]
    failures: list[Failure]


@dataclass(frozen=True)
class Pending:
    """Snapshots whose images are queued or being made: one future per image, by snapshot."""

    snapshots: tuple[Snapshot, ...]
    images: tuple[tuple[Future[Unsynced | Failure], ...], ...]


@dataclass(frozen=True)
class Sources:
    """Where blobs are read and how frames are decoded."""

    blob_root: Path
    database: str
    cameras: Cameras


class Materialiser:
    """Makes snapshots' files under ``cache_root`` with ``workers`` threads (0: one per core).

    Threads, not processes, use every core here: OpenCV's demosaic, numpy's row filter and
    ISA-L's deflate, which are nearly all of a frame's time, run without holding the GIL, and
    the pixels never have to be copied between processes.
    """

    def __init__(self, cache_root: Path, sources: Sources, png_level: int, workers: int) -> None:
        self.cache_root = cache_root
        self.sources = sources
        self.png_level = png_level
        threads = workers if workers > 0 else (os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="danforth-png")
        self._writer = CacheWriter(cache_root)

    def submit(self, snapshots: Sequence[Snapshot]) -> Pending:
        """Queue every image of ``snapshots`` on the pool and return at once; raises
        ``BlobStoreError`` when the store is away. :meth:`finish` waits for them."""
        if any(s.tiles for s in snapshots):
            check_store(self.sources.blob_root, self.sources.database)
        return Pending(
            tuple(snapshots),
            tuple(tuple(self._pool.submit(self._image, s, t) for t in s.tiles) for s in snapshots),
        )

    def finish(self, pending: Pending) -> list[Made]:
        """Wait for ``pending``'s images and write each snapshot's metadata file, in order.

        On any error every image of ``pending`` is cancelled or waited for (:meth:`abandon`)
        before it is raised, so nothing of it is still writing when it is made again.
        """
        try:
            pairs = zip(pending.snapshots, pending.images, strict=True)
            return [self._finish(snapshot, images) for snapshot, images in pairs]
        except BaseException:
            self.abandon(pending)
            raise

    def abandon(self, *pendings: Pending) -> None:
        """Cancel the queued images of ``pendings`` and wait for the running ones, and the
        writes of those made, to end."""
        futures = [f for pending in pendings for images in pending.images for f in images]
        for future in futures:
            future.cancel()
        wait(futures)
        made = (f.result() for f in futures if not f.cancelled() and f.exception() is None)
        wait([m.written for m in made if isinstance(m, Unsynced)])

    def make(self, snapshots: Sequence[Snapshot]) -> list[Made]:
        """Make every snapshot's files; raises ``BlobStoreError`` when the store is away."""
        return self.finish(self.submit(snapshots))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._writer.close()

    def _finish(self, snapshot: Snapshot, futures: Sequence[Future[Unsynced | Failure]]) -> Made:
        """Settle the snapshot's images, remove what else its directory holds, then write its
        metadata file and sync the directory: the metadata is there only with every image."""
        results = [f.result() for f in futures]
        failures = [r for r in results if isinstance(r, Failure)]
        images = [settle(self.cache_root, r) for r in results if isinstance(r, Unsynced)]
        missing = [Missing(f.name, f.error.reason) for f in failures]
        metadata = snapshot_metadata(snapshot, len(images), missing)
        name = metadata_name(snapshot.id)
        text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
        keep = {name, *(Path(i.rel).name for i in images)}
        directory = self.cache_root / snapshot_dir(snapshot.id)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            remove_others(directory, keep)  # after every image is settled under its name
            meta_file = write_file(
                self.cache_root, cache_rel(snapshot.id, name), text.encode(), None
            )
            _sync_dir(directory)
        except OSError as exc:
            raise CacheWriteError(f"cannot write into {directory}: {exc}") from exc
        return Made(snapshot, metadata, meta_file, images, failures)

    def _image(self, snapshot: Snapshot, tile: Tile) -> Unsynced | Failure:
        src = self.sources
        blob = blob_path(src.blob_root, src.database, snapshot.taken, tile.raw_image_oid)
        name = f"{tile.camera_label}_{tile.tiled_image_id}_{tile.frame}.png"
        try:
            name = image_name(tile.camera_label, tile.tiled_image_id, tile.frame)
            spec = src.cameras.spec(tile.camera_label, tile.dataformat)
            pixels = to_pixels(spec, read_frame(blob), tile.rotate_flip_type)
        except ImageError as exc:
            return Failure(tile, name, blob, exc)
        data = encode_png(pixels, self.png_level)
        meta = image_metadata(snapshot, tile, spec)
        # Written by the writer's threads and renamed by the thread that finishes the
        # snapshot, so that waiting for the disk never keeps a pool thread (a core) from
        # making the next image.
        return self._writer.start(cache_rel(snapshot.id, name), data, meta)


def remove_others(directory: Path, keep: set[str]) -> list[str]:
    """Remove the files of ``directory`` not named in ``keep`` (an interrupted run's leftovers)."""
    removed = []
    for entry in os.scandir(directory):
        if entry.name not in keep and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def image_name(camera_label: str, tiled_image_id: int, frame: int) -> str:
    """``<camera label>_<tiled image id>_<frame>.png``; a label unfit for a file name is refused."""
    if not camera_label or camera_label.startswith(".") or any(c in camera_label for c in "/\\\0"):
        raise ImageError("unsupported", f"camera label {camera_label!r} cannot name a file")
    return f"{camera_label}_{tiled_image_id}_{frame}.png"
