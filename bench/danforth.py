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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
import uuid
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
from producers.danforth.service import DanforthProducer
from terra_xfer.config import DEFAULT_CAMERAS, Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.lemnatec import SMALL_CAMERAS, danforth_config, new_site
from tests.pipeline import Stepping, gantry_config
from tests.postgres import PostgresServer

CAMERAS = {
    "small": SMALL_CAMERAS,
    "vga": ("VIS=640x480", "NIR=320x240", "PSII=320x240"),
    "real": DEFAULT_CAMERAS,
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
    config: Config, server: PostgresServer, snapshots: int, cameras: tuple[str, ...]
) -> dict[str, Any]:
    """Generate the snapshots, start every stage, insert the rows and time them to DONE."""
    site = new_site(server, config)
    rows = site.prepare(snapshots, cameras, watering_every=10)
    files = sum(len(p.files()) for p in rows.planned)
    backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir, workers=4)
    view = StateFollower(config, config.status.index_path.with_name("batcher.sqlite"))
    done = StateFollower(config, config.status.index_path.with_name("watch.sqlite"))
    named = stages(config, backend, view)
    runner = Stepping([s for _, s in named], [n for n, _ in named]).start()

    def all_done() -> bool:
        while done.refresh(timeout_s=0.05):
            pass
        return done.index.counts_by_state().get("DONE", 0) >= files

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
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--cameras", choices=sorted(CAMERAS), default="small")
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
            figures = run(config, server, args.snapshots, CAMERAS[args.cameras])
    finally:
        server.stop()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
