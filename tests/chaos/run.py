"""One chaos run: a night through every stage as its own process, with kills, a broker restart and
remote faults, then the invariants of :mod:`tests.chaos.invariants` checked on what is left.

The stages are those of the registry that the run's configuration enables. Each kill is a SIGKILL
of one stage's process or, with ``kill_supervisor``, of ``terra-xfer up`` running them all (a stage
of a killed ``up`` still running 2 s later is a violation too).

The broker is the run's own (it is killed), the transfer backend is Globus through its API double
and the catalog is Clowder through its double, both failing on a schedule.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terra_xfer.broker import EmbeddedBroker, free_port
from terra_xfer.config import BrokerConfig, Config, load
from terra_xfer.stages import registry
from terra_xfer.topics import (
    CHECKPOINTS,
    DEADLETTER,
    FILES_ARRIVED,
    FILES_DELETED,
    FILES_STATE,
    create_topics,
)
from tests.chaos import invariants
from tests.chaos.stages import ORPHAN_GRACE_S, Stages, Supervised
from tests.chaos.world import Night, stamp
from tests.doubles.clowder_api import ClowderDouble
from tests.doubles.globus_api import GlobusDouble
from tests.kafka_read import read_all

GLOBUS_SECRET = "chaos-globus-secret-7f3a"
CLOWDER_KEY = "chaos-clowder-key-91bd"
SITE = "ua-mac"
BROKER_TAG = "terra-xfer-test-broker"


@dataclass(frozen=True)
class Plan:
    """How much to ship and how hard to hit it."""

    files: int
    kills: int
    kill_gap_s: tuple[float, float]
    timeout_s: float
    faults: int
    seed: int = 1
    burst: int = 40
    burst_pause_s: float = 0.1


SHORT = Plan(files=1200, kills=8, kill_gap_s=(2.0, 6.0), timeout_s=240, faults=12)
# Killing `up` restarts every stage at once: fewer kills, further apart, over a smaller night.
SHORT_SUPERVISED = Plan(files=600, kills=4, kill_gap_s=(4.0, 10.0), timeout_s=240, faults=8)
LONG = Plan(
    files=20_000, kills=30, kill_gap_s=(4.0, 20.0), timeout_s=3600, faults=80, burst_pause_s=0.2
)


@dataclass
class Report:
    mode: str = "stages"  # or "up": what each kill hit
    files: int = 0
    ignored: int = 0
    bad_lines: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    broker_restarts: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    unexpected_exits: dict[str, int] = field(default_factory=dict)
    restarted_by_up: int = 0
    orphans: list[str] = field(default_factory=list)
    drain_s: float | None = None
    total_s: float = 0.0
    violations: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations and self.drain_s is not None


def config_toml(work: Path, bootstrap: str, globus: GlobusDouble, clowder: ClowderDouble) -> str:
    src = globus.add_endpoint(work / "cache")
    dst = globus.add_endpoint(work / "destination")
    return f"""
[kafka]
bootstrap_servers = "{bootstrap}"
partitions = 3
[gantry]
xferlog = "{work}/log/xferlog"
cache_root = "{work}/cache"
log_root = "/gantry_data"
[batcher]
max_files = 60
max_wait_s = 1
[transfer]
backend = "globus"
destination_root = "{work}/destination"
state_dir = "{work}/transfer"
[transfer.globus]
client_id = "{globus.client_id}"
source_endpoint = "{src}"
destination_endpoint = "{dst}"
source_base = "/"
destination_base = "/"
[monitor]
max_attempts = 10
poll_initial_s = 0.1
poll_max_s = 1
retry_backoff_s = 0.5
[catalog]
backend = "clowder"
[catalog.clowder]
url = "{clowder.url}"
[status]
index_path = "{work}/status.sqlite"
keeper_path = "{work}/keeper.sqlite"
[metrics]
port = 0
stall_exit_s = 60
"""


class Faults:
    """The remote failures of a run, fired one at a time at random moments."""

    def __init__(self, globus: GlobusDouble, clowder: ClowderDouble, rng: random.Random) -> None:
        self.globus, self.clowder, self.rng = globus, clowder, rng
        self.fired: Counter[str] = Counter()
        self.failing: list[str] = []
        self.failing_since = 0.0
        self.resumed: set[str] = set()
        upload = "POST /api/uploadToDataset/:id"
        self.kinds: dict[str, Callable[[], None]] = {
            "globus-429": lambda: globus.fail_requests(429, 2, retry_after=1),
            "globus-503": lambda: globus.fail_requests(503, 2),
            "globus-slow": lambda: globus.slow_requests(2.0, 2),
            "globus-lost-submit": lambda: globus.lose_next_submit_response(502),
            "globus-task-failed": lambda: globus.fail_next_task("ENDPOINT_ERROR", after_files=5),
            "globus-task-inactive": lambda: globus.pause_next_task(after_files=3),
            "clowder-503": lambda: clowder.faults.fail(upload, 503, times=3),
            "clowder-500": lambda: clowder.faults.fail("POST /api/datasets/createempty", 500),
            "clowder-reset": lambda: clowder.faults.reset(upload, times=2),
        }

    def fire(self, shipped: list[str]) -> None:
        kind = self.rng.choice([*self.kinds, "globus-partial"])
        if kind == "globus-partial" and shipped:
            self.failing = [f"/{rel}" for rel in self.rng.sample(shipped, min(3, len(shipped)))]
            self.globus.fail_paths(*self.failing)
            self.failing_since = time.monotonic()
        elif kind != "globus-partial":
            self.kinds[kind]()
        self.fired[kind] += 1

    def heal(self) -> None:
        """An operator's part: failing paths become readable again, INACTIVE tasks are resumed."""
        if self.failing and time.monotonic() - self.failing_since > 5.0:
            self.globus.heal_paths(*self.failing)
            self.failing = []
        for task_id in self.globus.task_ids():
            if task_id not in self.resumed and self.globus.task(task_id)["status"] == "INACTIVE":
                self.resumed.add(task_id)
                self.globus.resume_task(task_id)


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            yield path.relative_to(root).as_posix(), path


def latest_states(config: Config) -> dict[str, str]:
    return {v["key"]: v["state"] for _, v in read_all(config.kafka, config.topic(FILES_STATE))}


def catalog_entries(clowder: ClowderDouble) -> list[tuple[str, str]]:
    store = clowder.store
    files = store.rows("SELECT d.name, f.filename FROM files f JOIN datasets d ON d.id = f.dataset")
    named = store.rows(
        "SELECT 'dataset', name FROM datasets UNION ALL SELECT 'collection', name FROM collections"
    )
    docs = store.rows("SELECT target, content FROM metadata")
    return [
        *((str(d), str(f)) for d, f in files),
        *((f"<{kind}>", str(name)) for kind, name in named),
        *((f"<metadata of {t}>", hashlib.sha256(str(c).encode()).hexdigest()) for t, c in docs),
    ]


def evidence(config: Config, work: Path, clowder: ClowderDouble) -> invariants.Found:
    arrived = read_all(config.kafka, config.topic(FILES_ARRIVED))
    return invariants.Found(
        states=latest_states(config),
        dest_paths={v["key"]: v["dest_path"] for _, v in arrived},
        destination={
            rel: hashlib.sha256(p.read_bytes()).hexdigest() for rel, p in walk(work / "destination")
        },
        cache={rel: stamp(p) for rel, p in walk(work / "cache")},
        deletions=[v for _, v in read_all(config.kafka, config.topic(FILES_DELETED))],
        dead_letters=[v["raw"] for _, v in read_all(config.kafka, config.topic(DEADLETTER))],
        catalog=catalog_entries(clowder),
    )


def run(
    plan: Plan, work: Path, say: Callable[[str], None] = print, kill_supervisor: bool = False
) -> Report:
    """Run ``plan`` in ``work`` (which it fills) and return the figures and violations.

    ``kill_supervisor``: the stages run under ``terra-xfer up``, and each kill is of ``up``.
    """
    rng = random.Random(plan.seed)
    report = Report(mode="up" if kill_supervisor else "stages")
    started = time.monotonic()
    with ExitStack() as stack:
        broker = EmbeddedBroker(
            free_port(), work / "broker", BrokerConfig().kafka_version, heap="512m",
            controller_port=free_port(), tag=BROKER_TAG,
        )  # fmt: skip
        broker.start(timeout_s=120)
        stack.callback(broker.stop)
        globus = stack.enter_context(GlobusDouble(client_secret=GLOBUS_SECRET))
        clowder = stack.enter_context(ClowderDouble(api_key=CLOWDER_KEY))
        config_path = work / "chaos.toml"
        config_path.write_text(config_toml(work, broker.bootstrap, globus, clowder))
        env = {
            **os.environ,
            **globus.env(),
            "TERRA_XFER_GLOBUS_CLIENT_SECRET": GLOBUS_SECRET,
            "TERRA_XFER_CLOWDER_KEY": CLOWDER_KEY,
        }
        config = load(config_path, env)
        create_topics(config)
        night = Night(work / "cache", work / "log" / "xferlog", plan.files, plan.seed)
        stop = threading.Event()
        writer = threading.Thread(
            target=night.write,
            args=(stop, plan.burst, plan.burst_pause_s, lambda: _producer_placed(config)),
            daemon=True,
        )
        kind = Supervised if kill_supervisor else Stages
        stages = kind(config_path, env, work / "logs", registry.running(config))
        stack.callback(stages.stop_all)
        stack.callback(stop.set)
        stages.start_all()
        writer.start()
        faults = Faults(globus, clowder, rng)
        drained = _chaos_loop(plan, rng, broker, stages, faults, night, config, report, say)
        stop.set()
        writer.join()
        codes = stages.stop_all()
        say(f"stages stopped: {codes}")
        found = evidence(config, work, clowder)
        report.files, report.ignored, report.bad_lines = (
            len(night.shipped), len(night.ignored), len(night.bad),
        )  # fmt: skip
        report.kills = dict(stages.kills)
        report.unexpected_exits = dict(stages.unexpected_exits)
        report.restarted_by_up = stages.restarted_by_up
        report.orphans = list(stages.orphans)
        report.faults = dict(faults.fired)
        report.drain_s = drained
        report.violations = invariants.check(SITE, night.shipped, night.ignored, night.bad, found)
        report.violations += [
            f"{orphan} of a killed up still ran {ORPHAN_GRACE_S:.0f} s after the kill"
            for orphan in report.orphans
        ]
        if drained is None:
            report.violations.insert(0, f"not every file was DONE within {plan.timeout_s:.0f} s")
    report.total_s = round(time.monotonic() - started, 1)
    return report


def _producer_placed(config: Config, timeout_s: float = 120.0) -> None:
    """Wait until the gantry producer has committed its first position."""
    deadline = time.monotonic() + timeout_s
    while not read_all(config.kafka, config.topic(CHECKPOINTS)):
        if time.monotonic() > deadline:
            raise TimeoutError("the gantry producer committed no position")
        time.sleep(0.2)  # polling the checkpoint topic, bounded by the deadline


def _chaos_loop(
    plan: Plan,
    rng: random.Random,
    broker: EmbeddedBroker,
    stages: Stages,
    faults: Faults,
    night: Night,
    config: Config,
    report: Report,
    say: Callable[[str], None],
) -> float | None:
    """Kill, restart and fail things until every shipped file is DONE; the drain time, or None."""
    start = time.monotonic()
    deadline = start + plan.timeout_s
    next_kill = start + rng.uniform(*plan.kill_gap_s)
    next_fault = start + rng.uniform(1.0, 3.0)
    next_check = start
    written_at: float | None = None
    kills = 0
    while time.monotonic() < deadline:
        now = time.monotonic()
        stages.revive()
        if kills < plan.kills and now >= next_kill:
            if kills == plan.kills // 2 and not report.broker_restarts:
                say("kill -9 broker")
                broker.kill()
                broker.start(timeout_s=120)
                report.broker_restarts += 1
            victim = rng.choice(stages.victims)
            say(f"kill -9 {victim}")
            stages.kill(victim)
            kills += 1
            next_kill = now + rng.uniform(*plan.kill_gap_s)
        if now >= next_fault and sum(faults.fired.values()) < plan.faults:
            faults.fire(sorted(night.shipped))
            next_fault = now + rng.uniform(2.0, 6.0)
        faults.heal()
        if night.finished.is_set() and written_at is None:
            written_at = now
            say(f"night written: {len(night.shipped)} files to ship")
        if written_at is not None and kills >= plan.kills and now >= next_check:
            states = latest_states(config)
            # Reading files.state takes longer as it grows; it shares this process with the doubles.
            next_check = time.monotonic() + max(2.0, 5 * (time.monotonic() - now))
            done = sum(states.get(f"{SITE}/{rel}") == "DONE" for rel in night.shipped)
            say(f"{done}/{len(night.shipped)} DONE")
            if done == len(night.shipped):
                return round(time.monotonic() - written_at, 1)
        time.sleep(0.2)  # the loop's tick: kills and faults fire at their own random moments
    return None


def as_dict(report: Report) -> dict[str, Any]:
    return {**report.__dict__, "passed": report.passed}
