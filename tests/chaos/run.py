"""One chaos run: a night through the pipeline's stages while they are hit, with remote faults,
then the invariants of :mod:`tests.chaos.invariants` checked on what is left.

The stages are those of the registry that the run's configuration enables, hit one of three ways
(:mod:`tests.chaos.modes`): ``stages``, each its own process, a random one SIGKILLed at each strike
and the broker killed and restarted once; ``up``, all under ``terra-xfer up``, which is SIGKILLed at
each strike (a stage of a killed ``up`` still running 2 s later is a violation too); ``scale-out``,
every consuming stage as 1 to 3 pod-like replicas scaled, killed, frozen and rolled at each strike.

The broker is the run's own, the transfer backend is Globus through its API double and the catalog
is Clowder through its double, both failing on a schedule.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terra_xfer.broker import EmbeddedBroker, free_port
from terra_xfer.config import BrokerConfig, Config, load
from terra_xfer.stages import registry
from terra_xfer.topics import CHECKPOINTS, create_topics
from tests.broker_tag import TEST_BROKER_TAG
from tests.chaos import invariants
from tests.chaos.evidence import evidence, latest_states
from tests.chaos.modes import Chaos, chaos
from tests.chaos.remote import Faults, config_toml
from tests.chaos.stages import ORPHAN_GRACE_S
from tests.chaos.world import Night
from tests.doubles.clowder_api import ClowderDouble
from tests.doubles.globus_api import GlobusDouble
from tests.kafka_read import read_all

GLOBUS_SECRET = "chaos-globus-secret-7f3a"
CLOWDER_KEY = "chaos-clowder-key-91bd"
SITE = "ua-mac"
BROKER_TAG = TEST_BROKER_TAG
SHOWN_VIOLATIONS = 1000  # the rest are counted


@dataclass(frozen=True)
class Plan:
    """How much to ship and how hard to hit it: ``kills`` strikes (kills, or scale events)."""

    files: int
    kills: int
    kill_gap_s: tuple[float, float]
    timeout_s: float
    faults: int
    seed: int = 1
    burst: int = 40
    burst_pause_s: float = 0.1


SHORT = Plan(files=400, kills=6, kill_gap_s=(2.0, 5.0), timeout_s=240, faults=8)
# Killing `up` restarts every stage at once: fewer kills, further apart, over a smaller night.
SHORT_SUPERVISED = Plan(files=400, kills=4, kill_gap_s=(4.0, 10.0), timeout_s=240, faults=8)
LONG = Plan(
    files=20_000, kills=30, kill_gap_s=(4.0, 20.0), timeout_s=3600, faults=80, burst_pause_s=0.2
)
# Each scale event is slower to settle (a pod gone holds its partitions for the 10 s session).
SHORT_SCALE = Plan(files=500, kills=8, kill_gap_s=(3.0, 6.0), timeout_s=240, faults=6)
LONG_SCALE = Plan(
    files=20_000, kills=60, kill_gap_s=(4.0, 15.0), timeout_s=3600, faults=80, burst_pause_s=0.2
)
PLANS = {  # mode -> (short, long)
    "stages": (SHORT, LONG),
    "up": (SHORT_SUPERVISED, LONG),
    "scale-out": (SHORT_SCALE, LONG_SCALE),
}


@dataclass
class Report:
    mode: str = "stages"  # what each strike hit: "stages", "up" or "scale-out"
    files: int = 0
    ignored: int = 0
    bad_lines: int = 0
    kills: dict[str, int] = field(default_factory=dict)  # strikes by stage (or "up")
    broker_restarts: int = 0
    scale_events: dict[str, int] = field(default_factory=dict)  # by kind (scale-out)
    pods_started: int = 0  # scale-out: distinct pods (instance ids) over the night
    copies_seeded: dict[str, int] = field(default_factory=dict)  # from a peer's, by copy
    faults: dict[str, int] = field(default_factory=dict)
    unexpected_exits: dict[str, int] = field(default_factory=dict)
    restarted_by_up: int = 0
    orphans: list[str] = field(default_factory=list)
    hanging_aborted: list[str] = field(default_factory=list)  # after the broker's crash, if any
    slow_stops: list[str] = field(default_factory=list)  # pods killed after their grace period
    drain_s: float | None = None
    total_s: float = 0.0
    violations: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations and self.drain_s is not None


def run(plan: Plan, work: Path, say: Callable[[str], None] = print, mode: str = "stages") -> Report:
    """Run ``plan`` in ``work`` (which it fills) the ``mode`` way; the figures and violations."""
    rng = random.Random(plan.seed)
    report = Report(mode=mode)
    started = time.monotonic()
    with ExitStack() as stack:
        broker, globus, clowder = _services(stack, work)
        config_path, env, config = _configure(work, broker, globus, clowder)
        night = Night(work / "cache", work / "log" / "xferlog", plan.files, plan.seed)
        stop = threading.Event()
        writer = threading.Thread(
            target=night.write,
            args=(stop, plan.burst, plan.burst_pause_s, lambda: _producer_placed(config)),
            daemon=True,
        )
        launch = (config_path, env, work)
        hits = chaos(mode, plan.kills, rng, launch, registry.running(config), broker, say)
        stack.callback(hits.stop_all)
        stack.callback(stop.set)
        hits.start()
        writer.start()
        faults = Faults(globus, clowder, rng)
        report.drain_s = _chaos_loop(plan, rng, hits, faults, night, config, say)
        stop.set()
        writer.join()
        say(f"stages stopped: {hits.stop_all()}")
        found = evidence(config, config_path, env, work, clowder)
        _fill(report, plan, night, hits, faults, found)
    report.total_s = round(time.monotonic() - started, 1)
    return report


def _services(stack: ExitStack, work: Path) -> tuple[EmbeddedBroker, GlobusDouble, ClowderDouble]:
    """The run's own broker and the two remote doubles, stopped when ``stack`` closes."""
    broker = EmbeddedBroker(
        free_port(), work / "broker", BrokerConfig().kafka_version, heap="512m",
        controller_port=free_port(), tag=BROKER_TAG,
    )  # fmt: skip
    broker.start(timeout_s=120)
    stack.callback(broker.stop)
    globus = stack.enter_context(GlobusDouble(client_secret=GLOBUS_SECRET))
    clowder = stack.enter_context(ClowderDouble(api_key=CLOWDER_KEY))
    return broker, globus, clowder


def _configure(
    work: Path, broker: EmbeddedBroker, globus: GlobusDouble, clowder: ClowderDouble
) -> tuple[Path, dict[str, str], Config]:
    """The run's config file, the stages' environment and the loaded config; topics created."""
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
    return config_path, env, config


def _fill(
    report: Report, plan: Plan, night: Night, hits: Chaos, faults: Faults, found: invariants.Found
) -> None:
    """The report's figures and violations, after the run."""
    report.files, report.ignored, report.bad_lines = (
        len(night.shipped), len(night.ignored), len(night.bad),
    )  # fmt: skip
    for name, value in hits.figures().items():
        setattr(report, name, value)
    report.faults = dict(faults.fired)
    violations = invariants.check(SITE, night.shipped, night.ignored, night.bad, found)
    violations += [
        f"{orphan} of a killed up still ran {ORPHAN_GRACE_S:.0f} s after the kill"
        for orphan in report.orphans
    ]
    if report.drain_s is None:
        violations.insert(0, f"not every file was DONE within {plan.timeout_s:.0f} s")
    report.violations = violations[:SHOWN_VIOLATIONS]
    if len(violations) > SHOWN_VIOLATIONS:
        report.violations.append(f"... and {len(violations) - SHOWN_VIOLATIONS} more")


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
    hits: Chaos,
    faults: Faults,
    night: Night,
    config: Config,
    say: Callable[[str], None],
) -> float | None:
    """Strike and fail things until every shipped file is DONE (and nothing is left frozen or
    half rolled); the drain time from the end of the night, or None."""
    start = time.monotonic()
    deadline = start + plan.timeout_s
    next_strike = start + rng.uniform(*plan.kill_gap_s)
    next_fault = start + rng.uniform(1.0, 3.0)
    next_check = start
    written_at: float | None = None
    strikes = 0
    while time.monotonic() < deadline:
        now = time.monotonic()
        hits.tick(now)
        if strikes < plan.kills and now >= next_strike:
            say(hits.strike(rng, strikes, now))
            strikes += 1
            next_strike = now + rng.uniform(*plan.kill_gap_s)
        if now >= next_fault and sum(faults.fired.values()) < plan.faults:
            faults.fire(sorted(night.shipped))
            next_fault = now + rng.uniform(2.0, 6.0)
        faults.heal()
        if night.finished.is_set() and written_at is None:
            written_at = now
            say(f"night written: {len(night.shipped)} files to ship")
        if written_at is not None and strikes >= plan.kills and hits.settled and now >= next_check:
            states = latest_states(config)
            # Reading files.state takes longer as it grows; it shares this process with the doubles.
            next_check = time.monotonic() + max(2.0, 5 * (time.monotonic() - now))
            done = sum(states.get(f"{SITE}/{rel}") == "DONE" for rel in night.shipped)
            say(f"{done}/{len(night.shipped)} DONE")
            if done == len(night.shipped):
                return round(time.monotonic() - written_at, 1)
        time.sleep(0.2)  # the loop's tick: strikes and faults fire at their own random moments
    return None


def as_dict(report: Report) -> dict[str, Any]:
    return {**report.__dict__, "passed": report.passed}
