"""Files/s with 1, 2 and 3 replicas of every consuming stage, and the pause a scale event causes.

Each stage runs as its own ``terra-xfer <stage>`` process, as a pod would: the gantry producer
once, and every consuming stage (batcher, monitor, state keeper, ingest, deleter) as N replicas,
each with its own instance id and its own local state directory. A night's backlog is fed at
once and timed from the first line to every file DONE (local backends, small files).

The pause: with a steady feed, a replica of one stage is added, then removed with SIGTERM; the
pause of an event is the longest time, in the 30 s after it, during which the stage's group
committed no offset on its inputs while messages were waiting.

    PYTHONPATH=. .venv/bin/python -m bench.replicas [--files N] [--out bench/replicas.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.up_run import feed_all, feed_paced
from bench.workload import log_lines, night, write_files
from bench.workspace import Workspace, broker, wait_groups_stable
from consumers.state.view import StateFollower
from terra_xfer.config import Config
from terra_xfer.lag import group_offsets
from terra_xfer.stages import registry
from terra_xfer.stages.spec import StageSpec

CONSUMING = [s for s in registry.STAGES if s.group is not None]


class Pods:
    """Stage processes of one workspace, each with its instance id and state directory."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.numbers: dict[str, int] = {}

    def add(self, spec: StageSpec) -> str:
        n = self.numbers[spec.name] = self.numbers.get(spec.name, 0) + 1
        pod = f"{spec.name}-{n}"
        home = self.ws.root / "pods" / pod
        home.mkdir(parents=True)
        env = {
            **os.environ,
            "TERRA_XFER_INSTANCE_ID": pod,
            "TERRA_XFER_STATUS_INDEX_PATH": str(home / "status.sqlite"),
            "TERRA_XFER_STATUS_KEEPER_PATH": str(home / "keeper.sqlite"),
            "TERRA_XFER_METRICS_PORT": "0",
        }
        command = [sys.executable, "-m", "terra_xfer", "--log-json", *spec.argv]
        with (home / "log").open("ab") as log:
            self.procs[pod] = subprocess.Popen(
                [*command, "--config", str(self.ws.config_path)],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        return pod

    def stop(self, pod: str) -> None:
        proc = self.procs.pop(pod)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for pod in list(self.procs):
            self.stop(pod)


@contextlib.contextmanager
def workspace(base: Path, bootstrap: str, name: str) -> Iterator[tuple[Workspace, Config]]:
    """A fresh workspace with its topics; its topics, groups and files are dropped afterwards."""
    ws = Workspace(base, name, bootstrap)
    try:
        yield ws, ws.write(ws.settings())
    finally:
        ws.drop()


def done_count(view: StateFollower) -> int:
    view.refresh(1_000_000, 0.5)
    return view.index.counts_by_state().get("DONE", 0)


def throughput(base: Path, bootstrap: str, replicas: int, files: int) -> dict[str, Any]:
    """Seconds from the first line fed to every file DONE, with ``replicas`` of each stage."""
    ups = night(files, 4096, seed=replicas)
    with workspace(base, bootstrap, f"replicas{replicas}") as (ws, config):
        write_files(config.gantry.cache_root, ups)
        pods = Pods(ws)
        view = StateFollower(config, ws.root / "watch.sqlite")
        try:
            pods.add(registry.spec("gantry"))
            for spec in CONSUMING:
                for _ in range(replicas):
                    pods.add(spec)
            groups = [s.consumer_group(config) for s in CONSUMING]
            wait_groups_stable(bootstrap, groups, 180)
            started = feed_all(log_lines(config.gantry.cache_root, ups))(config.gantry.xferlog)
            deadline = time.monotonic() + 1800
            while done_count(view) < files:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{files} files not DONE in 30 minutes")
                time.sleep(0.5)  # polling files.state; the measurement is the end time
            seconds = time.time() - started / 1000
        finally:
            pods.stop_all()
            view.close()
    return {"replicas": replicas, "files": files, "seconds": round(seconds, 1),
            "files_per_s": round(files / seconds, 1)}  # fmt: skip


class OffsetWatch:
    """Polls a group's committed offsets; the longest stall (no commit while lag > 0) in a window."""

    def __init__(self, config: Config, spec: StageSpec) -> None:
        self.config, self.spec = config, spec
        self.samples: list[tuple[float, int, int]] = []  # (time, committed total, lag total)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        group = self.spec.consumer_group(self.config)
        while not self._stop.wait(0.1):
            rows = group_offsets(self.config, group, self.spec.inputs, timeout_s=5)
            committed = sum(r.committed or 0 for r in rows)
            self.samples.append(
                (time.monotonic(), committed, sum(max(0, r.end - r.position) for r in rows))
            )

    def __enter__(self) -> OffsetWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def longest_stall(self, start: float, end: float) -> float:
        """Seconds of the longest run of samples in [start, end] with waiting messages and no
        new commit."""
        longest, since, last = 0.0, None, None
        for at, committed, lag in self.samples:
            if at < start or at > end:
                continue
            if last is not None and committed == last and lag > 0:
                since = since if since is not None else at
                longest = max(longest, at - since)
            else:
                since = None
            last = committed
        return round(longest, 2)


def pauses(base: Path, bootstrap: str, files: int, stage: str = "state-keeper") -> dict[str, Any]:
    """The pause of one scale-up (1 → 2) and one scale-down by SIGTERM (2 → 1) of ``stage``."""
    spec = registry.spec(stage)
    ups = night(files, 4096, seed=7)
    with workspace(base, bootstrap, "scale-events") as (ws, config):
        write_files(config.gantry.cache_root, ups)
        pods = Pods(ws)
        try:
            pods.add(registry.spec("gantry"))
            for s in CONSUMING:
                pods.add(s)
            wait_groups_stable(bootstrap, [s.consumer_group(config) for s in CONSUMING], 180)
            lines = log_lines(config.gantry.cache_root, ups)
            rate = files / 60.0
            feeder = threading.Thread(
                target=feed_paced(lines, rate, {}), args=(config.gantry.xferlog,), daemon=True
            )
            with OffsetWatch(config, spec) as watch:
                feeder.start()
                time.sleep(15)  # steady flow first
                up_at = time.monotonic()
                extra = pods.add(spec)
                time.sleep(20)
                down_at = time.monotonic()
                pods.stop(extra)
                time.sleep(20)
                feeder.join()
            result = {
                "stage": stage,
                "feed_files_per_s": round(rate, 1),
                "scale_up_pause_s": watch.longest_stall(up_at, up_at + 20),
                "scale_down_pause_s": watch.longest_stall(down_at, down_at + 20),
                "steady_longest_gap_s": watch.longest_stall(up_at - 10, up_at),
            }
        finally:
            pods.stop_all()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=Path("bench/replicas.json"))
    args = ap.parse_args()
    results: dict[str, Any] = {"throughput": [], "pauses": []}
    with broker() as (config, _started), tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for n in (1, 2, 3):
            results["throughput"].append(
                throughput(Path(tmp), config.kafka.bootstrap_servers, n, args.files)
            )
            print(json.dumps(results["throughput"][-1]), flush=True)
        for stage in ("state-keeper", "batcher", "ingest"):
            results["pauses"].append(
                pauses(Path(tmp), config.kafka.bootstrap_servers, args.files, stage)
            )
            print(json.dumps(results["pauses"][-1]), flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
