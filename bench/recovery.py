"""§5: seconds from ``kill -9`` of a stage to that stage making progress again.

Every stage runs as its own process (``terra-xfer gantry``, ``batcher``, ``monitor``,
``state-keeper``, ``ingest``, ``deleter``), as on Kubernetes, while lines are appended to the
xferlog at a steady rate. One stage at a time is killed with SIGKILL and started again at once; its
recovery is the time from the kill until a read_committed reader sees the first event the new
incarnation committed to the stage's output topic (an event whose CreateTime is after the kill:
the old incarnation's open transaction is aborted, never read).

    PYTHONPATH=. python -m bench.recovery --stages gantry,state-keeper
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.figures import Figure, Goal, Section
from bench.up_run import cli_command
from bench.workload import content
from bench.workspace import Workspace, workspace
from producers.gantry.night import log_line, uploads
from terra_xfer.config import Config

OUTPUT = {
    "gantry": "files.arrived",
    "batcher": "batches.submitted",
    "monitor": "files.transferred",
    "state-keeper": "files.state",
    "ingest": "files.ingested",
    "deleter": "files.deleted",
}


class Watcher(threading.Thread):
    """Reads every output topic from its end (committed events only); remembers when each new
    event was seen and when it was created."""

    def __init__(self, config: Config) -> None:
        super().__init__(daemon=True)
        self.topics = {config.topic(t): t for t in OUTPUT.values()}
        self.consumer = Consumer(
            {
                "bootstrap.servers": config.kafka.bootstrap_servers,
                "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        parts = []
        meta = self.consumer.list_topics(timeout=30)
        for topic in self.topics:
            parts += [TopicPartition(topic, p, OFFSET_END) for p in meta.topics[topic].partitions]
        self.consumer.assign(parts)
        self.seen: dict[str, list[tuple[float, int]]] = {t: [] for t in OUTPUT.values()}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msg = self.consumer.poll(0.1)
                if msg is None or msg.error() is not None:
                    continue
                with self.lock:
                    self.seen[self.topics[msg.topic() or ""]].append(
                        (time.time(), msg.timestamp()[1])
                    )
        finally:
            self.consumer.close()

    def first_after(self, topic: str, created_after_ms: int) -> float | None:
        """When the first event created after ``created_after_ms`` was seen (epoch s)."""
        with self.lock:
            return next((seen for seen, made in self.seen[topic] if made > created_after_ms), None)

    def wait(self, topic: str, created_after_ms: int, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.first_after(topic, created_after_ms)
            if found is not None:
                return found
            time.sleep(0.02)
        return None


class Feeder(threading.Thread):
    """Writes cache files and appends their xferlog lines, ``per_s`` a second, until stopped."""

    def __init__(self, config: Config, per_s: float) -> None:
        super().__init__(daemon=True)
        self.config, self.per_s = config, per_s
        self.stop = threading.Event()
        self.fed = 0

    def run(self) -> None:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        cache, log = self.config.gantry.cache_root, self.config.gantry.xferlog
        began = time.monotonic()
        with log.open("ab", buffering=0) as out:
            for up in uploads(start, 10**7, seed=33, size=4096):
                if self.stop.is_set():
                    return
                if not up.whitelisted:
                    continue
                path = cache / up.rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content(up, b"x" * 4096))
                stamp = up.when.timestamp()
                os.utime(path, (stamp, stamp))
                out.write(log_line(up, size=path.stat().st_size))
                self.fed += 1
                self.stop.wait(max(0.0, began + self.fed / self.per_s - time.monotonic()))


class Stages:
    """One process per stage, restartable."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        with (self.ws.root / f"{name}.log").open("ab") as err:
            self.procs[name] = subprocess.Popen(
                cli_command(self.ws.config_path, name),
                stdout=err,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _member_ids(admin: AdminClient, group: str) -> tuple[str, list[str]]:
    """(state, member ids) of a consumer group."""
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    return str(described.state), [m.member_id for m in described.members]


def measure(
    stages: Stages, watcher: Watcher, config: Config, name: str, timeout_s: float
) -> tuple[float | None, float | None]:
    """Kill ``name`` and start it again at once. Seconds from the kill to its next committed
    output, and (for a consumer stage) to its group being stable with only the new member."""
    topic = OUTPUT[name]
    if watcher.wait(topic, int(time.time() * 1000) - 5000, 30) is None:
        raise RuntimeError(f"{name} made no progress before the kill")
    admin = AdminClient({"bootstrap.servers": config.kafka.bootstrap_servers})
    group = None if name == "gantry" else config.group(name)
    before = set(_member_ids(admin, group)[1]) if group else set()
    killed = time.time()
    stages.kill9(name)
    stages.start(name)
    settled: float | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if group is not None and settled is None:
            state, members = _member_ids(admin, group)
            if state.endswith("STABLE") and len(members) == 1 and not before & set(members):
                settled = time.time() - killed
        seen = watcher.first_after(topic, int(killed * 1000))
        if seen is not None and (group is None or settled is not None):
            return seen - killed, settled
        time.sleep(0.1)
    return None, settled


def section(base: Path, bootstrap: str, names: list[str], per_s: float = 20.0) -> Section:
    with workspace(base, "recovery", bootstrap) as ws:
        settings = ws.settings()
        config = ws.write(settings)
        watcher, feeder, stages = Watcher(config), Feeder(config, per_s), Stages(ws)
        watcher.start()
        for name in OUTPUT:
            stages.start(name)
        feeder.start()
        found: dict[str, tuple[float | None, float | None]] = {}
        try:
            for name in names:
                found[name] = measure(stages, watcher, config, name, 60)
                time.sleep(2)  # let the restarted stage settle before the next kill
        finally:
            feeder.stop.set()
            stages.stop_all()
            watcher.stop.set()
            watcher.join(10)
    s = Section("5", f"Recovery: kill -9 of one stage (its own process) at {per_s:g} lines/s")
    for name, (seconds, settled) in found.items():
        s.figures.append(
            Figure(
                f"`{name}` kill -9 → next committed output",
                float("inf") if seconds is None else seconds,
                "s",
                goal=Goal("value_below", 10),
                note="no progress within 60 s" if seconds is None else "",
            )
        )
        if settled is not None:
            s.details[f"{name}_group_settled_s"] = round(settled, 2)
    s.details |= {"lines_per_s": per_s, "output_topics": {n: OUTPUT[n] for n in found}}
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default=",".join(OUTPUT))
    ap.add_argument("--bootstrap", default="127.0.0.1:39092")
    args = ap.parse_args()
    s = section(Path("var/bench").resolve(), args.bootstrap, args.stages.split(","))
    print(json.dumps(s.to_dict(), indent=2))


if __name__ == "__main__":
    main()
