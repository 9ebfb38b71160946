"""Danforth end-to-end benchmark: LemnaTec snapshots per minute, from the moment their database rows
appear to the moment the last of their files is DONE (transferred, catalogued, deleted), with the
local transfer and catalog backends, every stage running in this process as `terra-xfer up` runs
them. The seed's uploader managed 3.5 snapshots/minute; the goal is 350.

The blobs are written before the clock starts (the LemnaTec server's work, not ours); then all the
snapshot rows are inserted in one transaction, and the clock runs until files.state says DONE for
every file. PostgreSQL is a throwaway server from Debian's package; the broker is the demo's.

    .venv/bin/terra-xfer --config examples/demo.toml broker start    # if not running yet
    PYTHONPATH=. .venv/bin/python bench/danforth.py --snapshots 1000
    PYTHONPATH=. .venv/bin/python bench/danforth.py --snapshots 40 --cameras real

The snapshots hold 10 images each; ``--images seed`` (the default) composes them as the
Scanalyzer's usual programme does (six VIS views, two NIR, two fluorescence), ``vis-nir`` as the
tests do (five VIS, five NIR). The floor is measured in the same run, on the same blobs, before
the pipeline's clock starts: every image read from its blob, decoded, demosaicked and written as
PNG bytes in memory by a bare thread pool of one thread per core, with no database, Kafka or
cache writes. The pipeline's figure is reported against it, and against the seed's 3.5/minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from consumers.batcher import Batcher
from consumers.catalog.local import LocalCatalog
from consumers.deleter import Deleter
from consumers.ingest import Ingest
from consumers.monitor import Monitor
from consumers.state.keeper import StateKeeper
from consumers.state.view import StateFollower
from consumers.transfer.local import LocalTransfer
from producers.danforth.blobs import blob_path, read_frame
from producers.danforth.cameras import Cameras
from producers.danforth.frames import to_pixels
from producers.danforth.lemnatec import database_name
from producers.danforth.png import encode_png
from producers.danforth.service import DanforthProducer
from terra_xfer.config import DEFAULT_CAMERAS, Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.lemnatec import LABELS, SEED_LABELS, SMALL_CAMERAS, Rows, danforth_config, new_site
from tests.pipeline import Stepping, gantry_config
from tests.postgres import PostgresServer

CAMERAS = {
    "small": SMALL_CAMERAS,
    "vga": ("VIS=640x480", "NIR=320x240", "PSII=320x240"),
    "real": DEFAULT_CAMERAS,
}
IMAGES = {"seed": SEED_LABELS, "vis-nir": LABELS}
SEED_RATE = 3.5  # snapshots/minute, the seed's uploader (ARCHITECTURE.md)


def floor(config: Config, rows: Rows, snapshots: int) -> dict[str, Any]:
    """Snapshots/minute of making every image's PNG bytes from its blob, one thread per core."""
    d = config.danforth
    cameras = Cameras(d.cameras)
    by_id = {image[0]: image[2] for image in rows.images}  # tiled image id -> camera label
    tiles = [(by_id[t[0]], t) for t in rows.tiles]
    taken = {s[0]: s[3] for s in rows.snapshots}
    of_image = {image[0]: image[1] for image in rows.images}

    def make(item: tuple[str, tuple[Any, ...]]) -> int:
        label, (image_id, oid, _frame, rotate, dataformat) = item
        path = blob_path(d.blob_root, database_name(d.dsn), taken[of_image[image_id]], oid)
        pixels = to_pixels(cameras.spec(label, dataformat), read_frame(path), rotate)
        return len(encode_png(pixels, d.png_level))

    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        written = sum(pool.map(make, tiles))
        seconds = time.perf_counter() - started
    return {
        "threads": threads,
        "images": len(tiles),
        "png_mb": round(written / 1e6, 1),
        "seconds": round(seconds, 2),
        "snapshots_per_minute": round(snapshots / seconds * 60),
        "per_core_snapshots_per_minute": round(snapshots / seconds * 60 / threads),
    }


def bench_config(root: Path, bootstrap: str) -> Config:
    base = Config()
    return gantry_config(
        dataclasses.replace(
            base,
            kafka=dataclasses.replace(
                base.kafka,
                bootstrap_servers=bootstrap,
                topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
            ),
            gantry=dataclasses.replace(base.gantry, cache_root=root / "gantry"),
            transfer=dataclasses.replace(
                base.transfer, destination_root=root / "dest", state_dir=root / "state"
            ),
            catalog=dataclasses.replace(base.catalog, path=root / "catalog.sqlite"),
            status=dataclasses.replace(
                base.status, index_path=root / "status.sqlite", keeper_path=root / "k.sqlite"
            ),
        ),
        max_wait_s=1.0,
    )


def stages(config: Config, backend: LocalTransfer, view: StateFollower) -> list[tuple[str, Any]]:
    """Every stage from the Danforth producer to the deleter, as `terra-xfer up` runs them."""
    spec = registry.spec
    return [
        ("danforth", DanforthProducer(config, spec("danforth"))),
        ("batcher", Batcher(config, spec("batcher"), backend, view)),
        ("monitor", Monitor(config, spec("monitor"), backend)),
        ("state-keeper", StateKeeper(config, spec("state-keeper"))),
        ("ingest", Ingest(config, spec("ingest"), LocalCatalog(config.catalog.path))),
        ("deleter", Deleter(config, spec("deleter"), backend)),
    ]


def run(
    config: Config,
    server: PostgresServer,
    snapshots: int,
    cameras: tuple[str, ...],
    labels: tuple[str, ...] = SEED_LABELS,
) -> dict[str, Any]:
    """Generate the snapshots, measure the floor on their blobs, then start every stage, insert
    the rows and time them to DONE."""
    site = new_site(server, config)
    rows = site.prepare(snapshots, cameras, watering_every=10, labels=labels)
    bare = floor(config, rows, snapshots)
    files = sum(len(p.files()) for p in rows.planned)
    backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir, workers=4)
    view = StateFollower(config, config.status.index_path.with_name("batcher.sqlite"))
    done = StateFollower(config, config.status.index_path.with_name("watch.sqlite"))
    named = stages(config, backend, view)
    runner = Stepping([s for _, s in named], [n for n, _ in named]).start()

    announced: list[float] = []  # when files.state first knew every file (producer's part)

    def all_done() -> bool:
        while done.refresh(timeout_s=0.05):
            pass
        counts = done.index.counts_by_state()
        if not announced and sum(counts.values()) >= files:
            announced.append(time.perf_counter())
        return counts.get("DONE", 0) >= files

    try:
        started = time.perf_counter()
        site.insert(rows)
        assert runner.wait(all_done, timeout_s=3600, check_every_s=0.1), "the pipeline stalled"
        elapsed = time.perf_counter() - started
    finally:
        try:
            runner.join(timeout_s=300)  # a chunk of full-size snapshots takes a while to end
        finally:
            for _, stage in reversed(named):
                stage.close()
            for closable in (view, done, backend, site):
                closable.close()
    return {
        "snapshots": snapshots,
        "files": files,
        "cameras": list(cameras),
        "seconds": round(elapsed, 1),
        "snapshots_per_minute": round(snapshots / elapsed * 60),
        "files_per_s": round(files / elapsed, 1),
        "goal_snapshots_per_minute": 350,
        "floor": bare,
        "ratio_to_floor": round(snapshots / elapsed * 60 / bare["snapshots_per_minute"], 2),
        # rows -> every file's FileArrived folded: the producer's own rate, transfers running too
        "announced_snapshots_per_minute": round(snapshots / (announced[0] - started) * 60),
        "times_the_seed": round(snapshots / elapsed * 60 / SEED_RATE),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--cameras", choices=sorted(CAMERAS), default="small")
    ap.add_argument("--images", choices=sorted(IMAGES), default="seed")
    ap.add_argument("--bootstrap", default="127.0.0.1:39092")
    ap.add_argument("--chunk", type=int, default=20, help="[danforth] chunk_snapshots")
    args = ap.parse_args()
    server = PostgresServer.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-danforth-") as tmp:
            config = danforth_config(
                bench_config(Path(tmp), args.bootstrap),
                server,
                f"bench_{uuid.uuid4().hex[:6]}",
                Path(tmp),
                CAMERAS[args.cameras],
                chunk_snapshots=args.chunk,
                workers=os.cpu_count() or 2,
            )
            create_topics(config)
            figures = run(
                config, server, args.snapshots, CAMERAS[args.cameras], IMAGES[args.images]
            )
    finally:
        server.stop()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
