"""One measured run of the real CLI, ``terra-xfer up``, as a subprocess fed through its xferlog.

The process is started on an empty log and waited for until every stage has stepped and every
consumer group is stable, so the measurement starts with the first appended line, not with
process start-up. Progress is read from the state keeper's own working copy of files.state (an
SQLite file it writes after each commit; readers never block it), which is cheap to count while
the run goes on; timings come from the records themselves:

- ``updated_ms`` of a file's row: when the state keeper folded the event that completed it;
- the BATCHED transition that carries a ``task_id``: the BatchSubmitted (SUBMITTED) event's
  ``emitted_ms``, i.e. when the batch's transfer task was submitted.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from bench.cpu import CpuMeter
from bench.cpu import processes as run_processes
from bench.workspace import broker_pid, wait_groups_stable, wait_ready
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.kafka import make_consumer
from terra_xfer.stages import registry
from terra_xfer.topics import CATALOGUE

DRY_RUN_MARK = b"DELETE_DRY_RUN"  # a transition's state, as the row's Avro bytes hold it


def cli_command(config_path: Path, *args: str) -> list[str]:
    """The ``terra-xfer`` console script of this interpreter's environment, with ``args``."""
    script = Path(sys.executable).with_name("terra-xfer")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "terra_xfer"]
    return [*head, "--config", str(config_path), "--log-level", "WARNING", *args]


def py_spy(raw: Path, pid: int | None = None) -> list[str]:
    """A ``py-spy record`` command writing raw stacks (per thread, idle left out) to ``raw``:
    attached to ``pid``, or, without one, as a prefix for the command to launch."""
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--format", "raw", "--threads", "--nonblocking", "--rate", "100"]
    cmd += ["--output", str(raw)]
    return [*cmd, "--pid", str(pid)] if pid is not None else [*cmd, "--"]


def end_offsets(config: Config) -> dict[str, int]:
    """The end offset of every catalogue topic, summed over its partitions (by catalogue name).

    Offsets count records and transaction markers alike: on fresh topics, what a run wrote."""
    consumer = make_consumer(config.kafka, "bench-offsets")
    try:
        meta = consumer.list_topics(timeout=30)
        out = {}
        for spec in CATALOGUE:
            topic = meta.topics.get(config.topic(spec.name))
            if topic is None:
                continue
            out[spec.name] = sum(
                consumer.get_watermark_offsets(TopicPartition(topic.topic, p), timeout=30)[1]
                for p in topic.partitions
            )
        return out
    finally:
        consumer.close()


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MB, while it still runs; with its children
    (``up --processes``: one per stage), the sum of their peaks added."""
    own = _hwm_mb(pid)
    if own is None:
        return None
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(_hwm_mb(int(c)) or 0.0 for c in children)


def _hwm_mb(pid: int) -> float | None:
    return vm_mb(pid, "VmHWM")


def vm_mb(pid: int, field: str) -> float | None:
    """A memory figure of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...) in MB; None once gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class KeeperView:
    """Read-only queries on the state keeper's working copy of files.state (a KeeperStore)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None and self.path.exists():
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        return self._db

    def count(self, state: str, dry_run: bool = False) -> int:
        """Files in ``state`` (with ``dry_run``, those whose history holds the dry-run deletion:
        every such row is read, so ask once the plain count is reached)."""
        db = self._conn()
        if db is None:
            return 0
        try:
            if dry_run:
                sql = "SELECT value FROM kept WHERE state = ?"
                return sum(DRY_RUN_MARK in v for (v,) in db.execute(sql, (state,)))
            return int(
                db.execute("SELECT count(*) FROM kept WHERE state = ?", (state,)).fetchone()[0]
            )
        except sqlite3.OperationalError:  # the schema is not written yet
            return 0

    def rows(self) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
        """(key, state, updated_ms, FileState) of every file."""
        db = self._conn()
        assert db is not None, f"{self.path} does not exist"
        codec = Codec()
        for key, value in db.execute("SELECT key, value FROM kept"):
            record = codec.decode(value)[1]
            yield key, record["state"], int(record["updated_ms"]), record

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def submitted_ms(record: dict[str, Any]) -> int | None:
    """When the file's batch was submitted (its first BATCHED transition with a task id)."""
    for transition in record.get("history", []):
        if transition["state"] == "BATCHED" and "task_id" in transition["evidence"]:
            return int(transition["at_ms"])
    return None


def transferred_ms(record: dict[str, Any]) -> int | None:
    """When the monitor reported the file transferred (its first TRANSFERRED transition)."""
    for transition in record.get("history", []):
        if transition["state"] == "TRANSFERRED":
            return int(transition["at_ms"])
    return None


@dataclass
class Outcome:
    """What one run measured: the start, each file's completion and submission, and the process."""

    started_ms: int
    completed_ms: dict[str, int] = field(default_factory=dict)
    submitted_ms: dict[str, int] = field(default_factory=dict)
    transferred_ms: dict[str, int] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)
    peak_rss_mb: float | None = None
    ready_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # per process, first line to the end
    offsets: dict[str, int] = field(default_factory=dict)  # per topic, at the end

    @property
    def end_ms(self) -> int:
        return max(self.completed_ms.values(), default=self.started_ms)

    def last_after_start_s(self, times: dict[str, int]) -> float:
        """Seconds from the start to the latest of ``times``."""
        return round((max(times.values(), default=self.started_ms) - self.started_ms) / 1000, 2)

    @property
    def seconds(self) -> float:
        return max(1e-3, (self.end_ms - self.started_ms) / 1000)


Feed = Callable[[Path], int]


def feed_all(lines: Sequence[bytes]) -> Feed:
    """Append every line in one write (a night's backlog at once); returns the start (ms)."""

    def feed(log: Path) -> int:
        data = b"".join(lines)
        with log.open("ab") as out:
            started = int(time.time() * 1000)
            out.write(data)
        return started

    return feed


def feed_paced(lines: Sequence[bytes], per_s: float, appended: dict[int, int]) -> Feed:
    """Append one line at a time, ``per_s`` lines a second; ``appended[i]`` = line i's time (ms)."""

    def feed(log: Path) -> int:
        began = time.monotonic()
        with log.open("ab", buffering=0) as out:
            for i, line in enumerate(lines):
                delay = began + i / per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                out.write(line)
                appended[i] = int(time.time() * 1000)
        return appended.get(0, int(time.time() * 1000))

    return feed


def run_up(
    config: Config,
    config_path: Path,
    metrics_port: int,
    feed: Feed,
    keys: set[str],
    *,
    dry_run: bool = False,
    processes: bool = False,
    timeout_s: float = 3600.0,
    profile: Path | None = None,
    profile_stage: str | None = None,
) -> Outcome:
    """Start ``up``, feed its log, wait until every key is complete, stop it; what it measured.

    With ``profile``, py-spy samples the process from the first line fed until it stops: ``up``,
    or with ``profile_stage`` (and a process per stage) that stage's process."""
    log_file = config_path.with_name("up.log")
    with log_file.open("ab") as err:
        proc = subprocess.Popen(
            cli_command(config_path, "up", "--quiet", "--processes" if processes else "--threads"),
            stdout=err,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    view = KeeperView(config.status.keeper_path)
    spy: subprocess.Popen[bytes] | None = None
    try:
        ready = wait_ready(metrics_port, 120, alive=lambda: proc.poll() is None)
        groups = [s.consumer_group(config) for s in registry.running(config) if s.group]
        ready += wait_groups_stable(config.kafka.bootstrap_servers, groups, 120)
        pids = run_processes(proc.pid, broker_pid())
        if profile is not None:
            target = pids[profile_stage] if profile_stage else proc.pid
            spy = subprocess.Popen(py_spy(profile, target), stdout=subprocess.DEVNULL)
        meter = CpuMeter(pids).start()
        outcome = Outcome(started_ms=feed(config.gantry.xferlog), ready_s=ready)
        _wait_complete(view, len(keys), dry_run, timeout_s, proc, log_file)
        outcome.cpu_s = meter.read()
        outcome.offsets = end_offsets(config)
        outcome.peak_rss_mb = peak_rss_mb(proc.pid)
        _collect(view, keys, dry_run, outcome)
        return outcome
    finally:
        view.close()
        stop(proc)
        if spy is not None:
            spy.wait(60)  # py-spy writes its output once the process it samples has exited


def _wait_complete(
    view: KeeperView,
    total: int,
    dry_run: bool,
    timeout_s: float,
    proc: subprocess.Popen[bytes],
    log_file: Path,
) -> None:
    state = "INGESTED" if dry_run else "DONE"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"terra-xfer up exited with {proc.returncode}: " + " | ".join(tail))
        reached = view.count(state) >= total
        # The dry-run check scans the rows' JSON: only once every file has reached the state.
        if reached and (not dry_run or view.count(state, dry_run=True) >= total):
            return
        time.sleep(1.0 if reached else 0.25)
    raise TimeoutError(f"{total} files were not {state} within {timeout_s:.0f} s")


def _collect(view: KeeperView, keys: set[str], dry_run: bool, outcome: Outcome) -> None:
    complete = "INGESTED" if dry_run else "DONE"
    for key, state, updated, record in view.rows():
        if key not in keys:
            continue
        submitted = submitted_ms(record)
        if submitted is not None:
            outcome.submitted_ms[key] = submitted
        transferred = transferred_ms(record)
        if transferred is not None:
            outcome.transferred_ms[key] = transferred
        dry = any(t["state"] == "DELETE_DRY_RUN" for t in record["history"])
        if state == complete and (dry or not dry_run):
            outcome.completed_ms[key] = updated
    outcome.incomplete = sorted(keys - outcome.completed_ms.keys())


def stop(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
