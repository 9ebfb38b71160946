"""Scale: a million files through ``terra-xfer up``, night after night, and what history costs.

    PYTHONPATH=. .venv/bin/python -m bench.scale [--nights 10] [--per-night 100000]

The pipeline runs as §3b does (the ``record`` transfer backend, the deleter in dry run: no bytes
moved, every stage's bookkeeping kept), ``up`` with a process per stage, on the demo's broker.
Each night is a simulated gantry night of ``--per-night`` uploads, dated a day after the last,
written to the cache and appended to the xferlog at once; ``up`` runs on from night to night, and
a night's cache files are removed once every one of them is complete (only the bookkeeping grows).

After the nights of ``--measure-at`` (by default 1, 5 and the last: 100k, 500k and 1M files):

- each local store's size on disk (SQLite file and its WAL) and bytes per file of history;
- each process's resident memory now (VmRSS) and at its peak (VmHWM);
- the night's files per second, and each process's CPU per file in that night (the broker's too).

``terra-xfer status`` is timed there too (it brings the status index, the one store that keeps
every file, up to date), and its index is among the stores measured.

After the nights of ``--restart-at`` (by default the first and the last), ``up`` is stopped and
each stage is started alone (``terra-xfer <stage>``, as a Kubernetes pod runs it) and timed from
its start to ``/readyz`` answering 200 (its first step done: joined, its local copy caught up),
then stopped: once with its local copy intact, once with the copy deleted (rebuilt from
files.state). ``up`` then starts again for the next night.

Results go to ``bench/scale.json`` (``--results``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.cpu import CpuMeter, per_file_ms, processes
from bench.machine import describe
from bench.up_run import KeeperView, cli_command, stop, vm_mb
from bench.workload import METADATA, log_lines, place_metadata, write_files
from bench.workspace import broker, broker_pid, wait_ready, workspace
from producers.gantry.night import Upload, uploads
from terra_xfer.broker import free_port
from terra_xfer.config import Config
from terra_xfer.stages import registry

SITE = "ua-mac"
FILE_SIZE = 4096
# Each stage's local copy of files.state, by stage (the indexer's is the status index).
COPIES = {
    "state-keeper": "state-keeper.sqlite",
    "batcher": "batcher-view.sqlite",
    "sweeper": "sweeper-view.sqlite",
    "indexer": "status.sqlite",
}


def night_uploads(n: int, count: int, first_day: datetime) -> list[Upload]:
    """Night ``n``'s ``count`` whitelisted uploads: the simulated night of its own day and seed."""
    start = first_day + timedelta(days=n)
    chosen: list[Upload] = []
    for up in uploads(start, count * 3 + 10, seed=1000 + n, size=FILE_SIZE):
        if up.whitelisted:
            chosen.append(up)
            if len(chosen) == count:
                return chosen
    raise ValueError(f"night {n} has fewer than {count} whitelisted uploads")


def store_sizes(root: Path) -> dict[str, int]:
    """Bytes on disk of every SQLite file under ``root`` (with its WAL), by file name, and of
    the transfer backend's task records."""
    sizes: dict[str, int] = {}
    for path in root.rglob("*.sqlite"):
        wal = path.with_name(path.name + "-wal")
        sizes[path.name] = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    tasks = root / "transfer"
    if tasks.exists():
        sizes["transfer state_dir"] = sum(p.stat().st_size for p in tasks.rglob("*") if p.is_file())
    return sizes


def memory(pid: int) -> dict[str, dict[str, float]]:
    """{process: {"rss_mb", "peak_mb"}} of ``up`` and its stage processes."""
    found: dict[str, dict[str, float]] = {}
    for name, p in processes(pid).items():
        rss, peak = vm_mb(p, "VmRSS"), vm_mb(p, "VmHWM")
        if rss is not None and peak is not None:
            found[name] = {"rss_mb": round(rss, 1), "peak_mb": round(peak, 1)}
    return found


class Up:
    """``terra-xfer up --processes`` on the run's config, started and stopped between nights."""

    def __init__(self, config_path: Path, port: int) -> None:
        self.config_path = config_path
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        log = self.config_path.with_name("up.log").open("ab")
        cmd = cli_command(self.config_path, "up", "--quiet", "--processes")
        env = {**os.environ, "TERRA_XFER_METRICS_PORT": str(self.port)}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        proc = self.proc
        return wait_ready(self.port, 600, alive=lambda: proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, 60)
        self.proc = None


def stage_ready_s(config_path: Path, stage: str) -> float:
    """Seconds from starting ``terra-xfer <stage>`` alone to its /readyz answering 200."""
    port = free_port()
    env = {**os.environ, "TERRA_XFER_METRICS_PORT": str(port)}
    log = config_path.with_name(f"{stage}.log").open("ab")
    began = time.monotonic()
    proc = subprocess.Popen(
        cli_command(config_path, stage), stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env
    )
    try:
        wait_ready(port, 900, alive=lambda: proc.poll() is None)
        return round(time.monotonic() - began, 2)
    finally:
        stop(proc, 60)


def restarts(config: Config, config_path: Path, lost: bool) -> dict[str, float]:
    """Each stage's seconds from start to ready: with its local copy intact, or (``lost``, only
    the stages that keep one) with the copy deleted first."""
    out: dict[str, float] = {}
    root = config.status.index_path.parent
    for spec in registry.running(config):
        if spec.argv != (spec.name,) or (lost and spec.name not in COPIES):
            continue
        if lost:
            for path in root.glob(COPIES[spec.name] + "*"):  # the file, its WAL, its shm
                path.unlink()
        out[spec.name] = stage_ready_s(config_path, spec.name)
    print(f"  ready after a restart ({'copy lost' if lost else 'intact'}): {out}", flush=True)
    return out


def status_s(config_path: Path) -> float:
    """Seconds ``terra-xfer status`` takes: it brings the status index up to date from where the
    indexer left it, then prints the summary (an index rebuilt from the start of files.state is
    the indexer's restart with its copy lost)."""
    began = time.monotonic()
    subprocess.run(cli_command(config_path, "status"), check=True, stdout=subprocess.DEVNULL)
    seconds = round(time.monotonic() - began, 2)
    print(f"  status: {seconds} s", flush=True)
    return seconds


def wait_complete(view: KeeperView, total: int, up: Up, timeout_s: float = 7200) -> None:
    """Until ``total`` files are INGESTED with their dry-run deletion recorded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert up.proc is not None and up.proc.poll() is None, "terra-xfer up exited"
        if view.count("INGESTED") >= total and view.count("INGESTED", dry_run=True) >= total:
            return
        time.sleep(1.0)
    raise TimeoutError(f"{total} files were not complete within {timeout_s:.0f} s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(args.base).resolve()
    results: dict[str, Any] = {
        "nights": args.nights,
        "per_night": args.per_night,
        "file_size": FILE_SIZE,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "measured": [],
        "cpu_ms_per_file": [],
    }
    first_day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=args.nights + 1)
    with broker() as (demo, _started), workspace(base, "scale", demo.kafka.bootstrap_servers) as ws:
        results["machine"] = describe(demo.broker.kafka_version)
        settings = ws.settings()
        settings["transfer"]["backend"] = "record"
        settings["deleter"]["dry_run"] = True
        config = ws.write(settings)
        up = Up(ws.config_path, free_port())
        view = KeeperView(config.status.keeper_path)
        keys: set[str] = set()  # nights days apart may upload the same path: count files once
        try:
            results["up_first_ready_s"] = round(up.start(), 2)
            for n in range(1, args.nights + 1):
                ups = night_uploads(n, args.per_night, first_day)
                write_files(config.gantry.cache_root, ups)
                place_metadata(config, [u for u in ups if u.rel.endswith(METADATA)])
                lines = log_lines(config.gantry.cache_root, ups)
                print(f"night {n}: {len(ups):,} files written", flush=True)
                assert up.proc is not None
                meter = CpuMeter(processes(up.proc.pid, broker_pid())).start()
                began = time.monotonic()
                with config.gantry.xferlog.open("ab") as log:
                    log.write(b"".join(lines))
                keys.update(u.rel for u in ups)
                total = len(keys)
                wait_complete(view, total, up)
                seconds = time.monotonic() - began
                rate = round(len(ups) / seconds)
                cpu = per_file_ms(meter.read(), len(ups))
                results["cpu_ms_per_file"].append({"night": n, "files_per_s": rate} | cpu)
                print(
                    f"night {n}: {total:,} files, {rate:,} files/s, CPU ms a file {cpu}", flush=True
                )
                for top in config.gantry.cache_root.iterdir():  # as the deleter would, once DONE
                    shutil.rmtree(top, ignore_errors=True)
                if n not in args.measure_at and n != args.nights:
                    continue
                assert up.proc is not None
                measured: dict[str, Any] = {"night": n, "files": total, "files_per_s": rate}
                measured["memory_mb"] = memory(up.proc.pid)
                up.stop()
                view.close()  # the keeper's copy may be deleted and rebuilt: read the new file
                # Every stage started alone once (its copy caught up) before the sizes are read.
                ready = {"intact": restarts(config, ws.config_path, lost=False)}
                measured["status_s"] = status_s(ws.config_path)
                sizes = store_sizes(ws.root)
                measured["store_bytes"] = sizes
                measured["store_bytes_per_file"] = {k: round(v / total) for k, v in sizes.items()}
                print(f"  stores {sizes}", flush=True)
                if n in args.restart_at or n == args.nights:
                    ready["copy_lost"] = restarts(config, ws.config_path, lost=True)
                measured["ready_s"] = ready
                results["measured"].append(measured)
                view = KeeperView(config.status.keeper_path)
                if n < args.nights:
                    print(f"  up ready again in {up.start():.1f} s", flush=True)
        finally:
            view.close()
            up.stop()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--per-night", type=int, default=100_000)
    parser.add_argument("--measure-at", type=int, nargs="*", default=[1, 5])
    parser.add_argument("--restart-at", type=int, nargs="*", default=[1])
    parser.add_argument("--base", default="var/bench")
    parser.add_argument("--results", default="bench/scale.json")
    args = parser.parse_args()
    results = run(args)
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.results}")


if __name__ == "__main__":
    main()
