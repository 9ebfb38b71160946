"""Transfer-stage benchmark: files/s through batcher + monitor with the local backend, against a
plain loop that copies each file (write, fsync, rename) — the filesystem's own limit — on the same
files, in the same run.

    PYTHONPATH=. python bench/transfer.py --files 5000 --bootstrap 127.0.0.1:39092
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from consumers.batcher import Batcher
from consumers.monitor import Monitor
from consumers.transfer.local import LocalTransfer
from producers.gantry.service import GantryProducer, log_source
from terra_xfer.config import Config
from terra_xfer.runner import StageRunner
from terra_xfer.topics import create_topics
from tests.pipeline import drain, gantry_config, write_night


def plain_copy(cache: Path, rels: list[str], dest: Path) -> float:
    started = time.perf_counter()
    for rel in rels:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with (cache / rel).open("rb") as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, target)
    return len(rels) / (time.perf_counter() - started)


def pipeline(config: Config, count: int) -> float:
    backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
    batcher, monitor = Batcher(config, backend), Monitor(config, backend)
    runner = StageRunner([("batcher", batcher), ("monitor", monitor)])
    started = time.perf_counter()
    runner.start()
    try:
        assert runner.wait(lambda: monitor.files_transferred >= count, 3600, check_every_s=0.05)
    finally:
        runner.join()
        backend.close()
    return count / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--bootstrap", default="127.0.0.1:39092")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        base = Config()
        config = gantry_config(
            dataclasses.replace(
                base,
                kafka=dataclasses.replace(
                    base.kafka,
                    bootstrap_servers=args.bootstrap,
                    topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
                ),
                gantry=dataclasses.replace(
                    base.gantry,
                    cache_root=Path(tmp) / "cache",
                    xferlog=Path(tmp) / "log" / "xferlog",
                ),
                transfer=dataclasses.replace(
                    base.transfer,
                    destination_root=Path(tmp) / "dest",
                    state_dir=Path(tmp) / "state",
                ),
                status=dataclasses.replace(base.status, keeper_path=Path(tmp) / "k.sqlite"),
            ),
            max_wait_s=1.0,
        )
        create_topics(config)
        shipped = sorted(set(write_night(config, args.files, seed=5, size=4096)))
        producer = GantryProducer(config, log_source(config, "xferlog"))
        drain(producer)
        producer.close()
        rng = random.Random(1)
        sample = rng.sample(shipped, len(shipped))
        copy_rate = plain_copy(config.gantry.cache_root, sample, Path(tmp) / "plain")
        rate = pipeline(config, len(shipped))
    figures = {
        "files": len(shipped),
        "batcher_monitor_files_per_s": round(rate),
        "plain_copy_files_per_s": round(copy_rate),
        "ratio": round(rate / copy_rate, 3),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
