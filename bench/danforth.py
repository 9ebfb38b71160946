"""Danforth end-to-end benchmark: LemnaTec snapshots per minute, from the moment their database rows
appear to the moment the last of their files is DONE (transferred, catalogued, deleted), with the
local catalog, every stage running in this process as `terra-xfer up --threads` runs them. The
seed's uploader managed 3.5 snapshots/minute; the goal is 350.

The blobs are written before the clock starts (the LemnaTec server's work, not ours); then all the
snapshot rows are inserted in one transaction, and the clock runs until files.state says DONE for
every file. PostgreSQL is a throwaway server from Debian's package; the broker is the demo's.

    .venv/bin/terra-xfer --config examples/demo.toml broker start    # if not running yet
    PYTHONPATH=. .venv/bin/python bench/danforth.py --snapshots 1000
    PYTHONPATH=. .venv/bin/python bench/danforth.py --snapshots 40 --cameras real

The snapshots hold 10 images each; ``--images seed`` (the default) composes them as the
Scanalyzer's usual programme does (six VIS views, two NIR, two fluorescence), ``vis-nir`` as the
tests do (five VIS, five NIR).

The floor is measured in the same run, on the same blobs, before the pipelines' clocks start:
every image read from its blob, decoded, demosaicked and made into PNG bytes in memory by a bare
pool of one thread per core, with no database, Kafka or cache writes (the issue's floor). Beside
it: the same with one thread (the floor per core, measured, and how far threads scale), and with
one thread per core that also writes each PNG as the producer does (temporary name, fsync,
rename), which is what the producer cannot do without.

The pipeline runs once per ``--transfers`` backend, each on a LemnaTec database of its own that
holds the same rows and reads the same blobs. ``record`` (the headline): the transfer is done
elsewhere, as with Globus, whose endpoint copies and verifies the bytes; the stages do everything
else they do with Globus (the deleter stats and unlinks each cache file, with no checksum to
compare, as Globus reports none), though the configuration refuses ``record`` without a dry-run
deleter at a real site, where it would delete files never copied. ``local``: the same cores also
copy, hash and verify every byte. Every figure comes with the CPU it used and the CPU others used
on the machine meanwhile (``others_cpu_s``): a large one means a disturbed figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.cpu import CpuMeter, busy_s
from bench.workspace import broker_pid
from consumers.batcher import Batcher
from consumers.catalog.local import LocalCatalog
from consumers.deleter import Deleter
from consumers.ingest import Ingest
from consumers.monitor import Monitor
from consumers.state.keeper import StateKeeper
from consumers.state.view import StateFollower
from consumers.transfer.base import TransferBackend
from consumers.transfer.local import LocalTransfer
from consumers.transfer.record import RecordTransfer
from producers.danforth.blobs import blob_path, read_frame
from producers.danforth.cache_writes import CacheWriter, Unsynced, settle
from producers.danforth.cameras import Cameras
from producers.danforth.frames import to_pixels
from producers.danforth.lemnatec import database_name
from producers.danforth.png import encode_png
from producers.danforth.service import DanforthProducer
from terra_xfer.config import DEFAULT_CAMERAS, Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.lemnatec import (
    LABELS,
    SEED_LABELS,
    SMALL_CAMERAS,
    LemnaTecSite,
    Rows,
    danforth_config,
    new_site,
)
from tests.pipeline import Stepping, gantry_config
from tests.postgres import PostgresServer

CAMERAS = {
    "small": SMALL_CAMERAS,
    "vga": ("VIS=640x480", "NIR=320x240", "PSII=320x240"),
    "real": DEFAULT_CAMERAS,
}
IMAGES = {"seed": SEED_LABELS, "vis-nir": LABELS}
SEED_RATE = 3.5  # snapshots/minute, the seed's uploader (ARCHITECTURE.md)
GOAL = 350  # snapshots/minute (issue 25)
# "record": the transfer is done elsewhere, as with Globus; "local": these cores copy it too.
BACKENDS = ("record", "local")


class MachineMeter(CpuMeter):
    """CPU seconds between :meth:`start` and :meth:`read` of this process and the broker, and
    of the rest of the machine (busy time in ``/proc/stat`` less both). The machine is shared, so
    a figure comes with how much others used meanwhile (``others_cpu_s``): a large one means the
    figure was disturbed and the run should be repeated."""

    def start(self) -> MachineMeter:
        self._busy = busy_s()
        super().start()
        return self

    def read(self) -> dict[str, float]:
        ours = super().read()
        others = busy_s() - self._busy - sum(ours.values())
        return {f"{name}_cpu_s": round(v, 1) for name, v in ours.items()} | {
            "others_cpu_s": round(max(0.0, others), 1)
        }


class Floor:
    """Snapshots/minute of making every image's PNG bytes from its blob in a bare thread pool:
    with one thread per core (the issue's floor), with one thread (the floor per core, measured),
    and with one thread per core that also writes each PNG into a scratch cache as the producer
    does (temporary name, fsync, rename), to show what the cache writes cost on their own."""

    def __init__(self, config: Config, rows: Rows, snapshots: int, meter: MachineMeter) -> None:
        d = config.danforth
        self.config = config
        self.cameras = Cameras(d.cameras)
        by_id = {image[0]: image[2] for image in rows.images}  # tiled image id -> camera label
        self.tiles = [(by_id[t[0]], t) for t in rows.tiles]
        self.taken = {s[0]: s[3] for s in rows.snapshots}
        self.of_image = {image[0]: image[1] for image in rows.images}
        self.snapshots = snapshots
        self.meter = meter
        self.scratch = d.cache_root.with_name("floor-scratch")

    def measure(self, threads: int, writes: bool = False) -> dict[str, Any]:
        """One pass over every image: snapshots/minute, PNG bytes, CPU and others' CPU."""
        writer = CacheWriter(self.scratch)
        with ThreadPoolExecutor(threads) as pool:
            self.meter.start()
            started = time.perf_counter()
            if writes:  # handed to the writer's threads, settled here in order, as the producer
                made = pool.map(lambda item: self._started(writer, item), self.tiles)
                total = sum(settle(self.scratch, unsynced).size for unsynced in made)
            else:
                total = sum(pool.map(self._length, self.tiles))
            seconds = time.perf_counter() - started
            cpu = self.meter.read()
        writer.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return {
            "threads": threads,
            "snapshots_per_minute": round(self.snapshots / seconds * 60),
            "png_mb": round(total / 1e6, 1),
            "cpu_ms_per_snapshot": round(cpu["bench_cpu_s"] / self.snapshots * 1000),
            "others_cpu_s": cpu["others_cpu_s"],
        }

    def _png(self, item: tuple[str, tuple[Any, ...]]) -> bytes:
        d = self.config.danforth
        label, (image_id, oid, _frame, rotate, dataformat) = item
        taken = self.taken[self.of_image[image_id]]
        path = blob_path(d.blob_root, database_name(d.dsn), taken, oid)
        pixels = to_pixels(self.cameras.spec(label, dataformat), read_frame(path), rotate)
        return encode_png(pixels, d.png_level)

    def _length(self, item: tuple[str, tuple[Any, ...]]) -> int:
        return len(self._png(item))

    def _started(self, writer: CacheWriter, item: tuple[str, tuple[Any, ...]]) -> Unsynced:
        image_id = item[1][0]
        rel = f"snapshot{self.of_image[image_id]}/{item[0]}_{image_id}.png"
        return writer.start(rel, self._png(item), None)


def floor_figures(
    before: dict[str, Any], after: dict[str, Any], one: dict[str, Any]
) -> dict[str, Any]:
    """The floor of a run: measured before and after the pipelines, the higher of the two (the
    less disturbed) taken for the ratios; per core from the one-thread pass."""
    best = max(before["snapshots_per_minute"], after["snapshots_per_minute"])
    per_core = one["snapshots_per_minute"]
    return {
        "threads": before["threads"],
        "snapshots_per_minute": best,
        "before_and_after": [before, after],
        "one_thread": one,
        "per_core_snapshots_per_minute": per_core,
        "scaling_over_one_thread": round(best / per_core, 2),
        "cores_for_goal": round(GOAL / per_core, 1),
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


def stages(config: Config, backend: TransferBackend, view: StateFollower) -> list[tuple[str, Any]]:
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


def line_config(base: Config, root: Path, bootstrap: str, database: str, backend: str) -> Config:
    """``base``'s ``[danforth]`` section on ``database``, with topics, cache, destination and
    state of its own under ``root``, and the transfer ``backend``."""
    config = bench_config(root, bootstrap)
    danforth = dataclasses.replace(
        base.danforth, dsn=base.danforth.dsn.replace(database_name(base.danforth.dsn), database)
    )
    danforth = dataclasses.replace(danforth, cache_root=root / "danforth")
    transfer = dataclasses.replace(config.transfer, backend=backend)  # type: ignore[arg-type]
    return dataclasses.replace(config, danforth=danforth, transfer=transfer)


def twin_site(server: PostgresServer, config: Config, blobs_of: str) -> LemnaTecSite:
    """A new LemnaTec database for ``config`` whose blob directory is ``blobs_of``'s: the same
    rows inserted there find the same blobs."""
    database = database_name(config.danforth.dsn)
    server.create_database(database)
    root = config.danforth.blob_root
    (root / database).symlink_to(root / blobs_of, target_is_directory=True)
    return LemnaTecSite(server.connect(database), root, database)


def pipeline(
    config: Config, site: LemnaTecSite, rows: Rows, snapshots: int, meter: MachineMeter
) -> dict[str, Any]:
    """Start every stage, insert the rows and time them until every file is DONE."""
    files = sum(len(p.files()) for p in rows.planned)
    backend: TransferBackend
    if config.transfer.backend == "record":
        backend = RecordTransfer()
    else:
        backend = LocalTransfer(
            config.transfer.destination_root, config.transfer.state_dir, workers=4
        )
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
        meter.start()
        started = time.perf_counter()
        site.insert(rows)
        assert runner.wait(all_done, timeout_s=3600, check_every_s=0.1), "the pipeline stalled"
        elapsed = time.perf_counter() - started
        cpu = meter.read()
    finally:
        try:
            runner.join(timeout_s=300)  # a chunk of full-size snapshots takes a while to end
        finally:
            for _, stage in reversed(named):
                stage.close()
            for closable in (view, done, backend):
                closable.close()
    return {
        "transfer": config.transfer.backend,
        "seconds": round(elapsed, 1),
        "snapshots_per_minute": round(snapshots / elapsed * 60),
        "files_per_s": round(files / elapsed, 1),
        # rows -> every file's FileArrived folded: the producer's own rate, the others running too
        "announced_snapshots_per_minute": round(snapshots / (announced[0] - started) * 60),
        "cpu_ms_per_snapshot": round(cpu["bench_cpu_s"] / snapshots * 1000),
        "broker_cpu_ms_per_snapshot": round(cpu.get("broker_cpu_s", 0.0) / snapshots * 1000),
        "others_cpu_s": cpu["others_cpu_s"],
    }


def run(
    config: Config,
    server: PostgresServer,
    snapshots: int,
    cameras: tuple[str, ...],
    labels: tuple[str, ...] = SEED_LABELS,
    backends: tuple[str, ...] = BACKENDS,
    bootstrap: str = "127.0.0.1:39092",
) -> dict[str, Any]:
    """Generate the snapshots, measure the floor on their blobs, then run the pipeline once per
    transfer backend, each on a database of its own holding the same rows and blobs."""
    site = new_site(server, config)
    try:
        rows = site.prepare(snapshots, cameras, watering_every=10, labels=labels)
    finally:
        site.close()
    broker = broker_pid()
    meter = MachineMeter({"bench": os.getpid()} | ({"broker": broker} if broker else {}))
    floor = Floor(config, rows, snapshots, meter)
    cores = os.cpu_count() or 1
    before, one = floor.measure(cores), floor.measure(1)
    with_writes = floor.measure(cores, writes=True)
    lines = {}
    for backend in backends:
        root = config.danforth.blob_root.parent / backend
        database = f"{site.database}_{backend}"
        line = line_config(config, root, bootstrap, database, backend)
        create_topics(line)
        twin = twin_site(server, line, site.database)
        try:
            found = pipeline(line, twin, rows, snapshots, meter)
        finally:
            twin.close()
        lines[backend] = found
    bare = floor_figures(before, floor.measure(cores), one) | {"with_cache_writes": with_writes}
    for found in lines.values():
        for figure in ("snapshots_per_minute", "announced_snapshots_per_minute"):
            ratio = found[figure] / bare["snapshots_per_minute"]
            found[figure.replace("snapshots_per_minute", "ratio_to_floor")] = round(ratio, 2)
        found["times_the_seed"] = round(found["snapshots_per_minute"] / SEED_RATE)
    headline = lines[backends[0]]
    return {
        "snapshots": snapshots,
        "files": sum(len(p.files()) for p in rows.planned),
        "cameras": list(cameras),
        "chunk_snapshots": config.danforth.chunk_snapshots,
        "headline_transfer": backends[0],
        "snapshots_per_minute": headline["snapshots_per_minute"],
        "ratio_to_floor": headline["ratio_to_floor"],
        "times_the_seed": headline["times_the_seed"],
        "goal_snapshots_per_minute": GOAL,
        "floor": bare,
        "pipelines": lines,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--cameras", choices=sorted(CAMERAS), default="small")
    ap.add_argument("--images", choices=sorted(IMAGES), default="seed")
    ap.add_argument("--bootstrap", default="127.0.0.1:39092")
    ap.add_argument("--chunk", type=int, default=10, help="[danforth] chunk_snapshots")
    ap.add_argument(
        "--transfers",
        default=",".join(BACKENDS),
        help="transfer backends, one pipeline run each; the first is the headline",
    )
    args = ap.parse_args()
    backends = tuple(b for b in args.transfers.split(",") if b)
    if not backends or set(backends) - set(BACKENDS):
        ap.error(f"--transfers takes one or more of {', '.join(BACKENDS)}")
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
                workers=0,  # the producer's default: one thread per core
            )
            figures = run(
                config,
                server,
                args.snapshots,
                CAMERAS[args.cameras],
                IMAGES[args.images],
                backends,
                args.bootstrap,
            )
    finally:
        server.stop()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
