"""The scale-out chaos mode's events, on pods whose processes are stand-ins: every kind happens,
each replicated stage keeps 1 to 3 serving replicas, the state keeper 2 in the first half, and a
seed always gives the same night."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import ClassVar

import pytest

from terra_xfer.config import Config
from terra_xfer.stages import registry
from tests.chaos.pods import Pods
from tests.chaos.scale import KEEPER, KINDS, Scaler


class StandIn:
    """A process that ends at once on SIGTERM or SIGKILL and can be stopped and continued."""

    instances: ClassVar[list[StandIn]] = []

    def __init__(self, argv: list[str], env: dict[str, str], **_: object) -> None:
        self.argv, self.env = argv, env
        self.returncode: int | None = None
        self.stopped = False
        self.pid = 0
        StandIn.instances.append(self)

    def send_signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGKILL) and self.returncode is None:
            self.returncode = 0 if sig == signal.SIGTERM else -9
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            self.stopped = sig == signal.SIGSTOP

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


@pytest.fixture
def pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pods:
    StandIn.instances = []
    monkeypatch.setattr("tests.chaos.pods.subprocess.Popen", StandIn)
    return Pods(tmp_path / "chaos.toml", {}, tmp_path, registry.running(Config()))


def night(pods: Pods, seed: int, events: int) -> tuple[Scaler, list[str]]:
    """``events`` events 5 s apart, the pods ticked every second; what was done, in order."""
    scaler = Scaler(pods, random.Random(seed), events)
    scaler.start()
    done, now = [], 0.0
    for _ in range(events):
        done.append(scaler.fire(now))
        for _ in range(5):
            now += 1.0
            pods.tick(now)
            for stage in pods.replicated:
                floor = 2 if stage == KEEPER and sum(scaler.fired.values()) <= events // 2 else 1
                assert floor <= len(pods.of(stage)) <= 3, (stage, done)
    return scaler, done


def test_every_kind_happens_within_bounds_and_each_pod_has_its_own_id_and_files(
    pods: Pods,
) -> None:
    scaler, done = night(pods, seed=3, events=80)
    assert set(scaler.fired) == set(KINDS) and sum(scaler.fired.values()) == 80
    assert pods.unexpected_exits == {}
    ids = [p.env["TERRA_XFER_INSTANCE_ID"] for p in StandIn.instances]
    starts = [p for p in StandIn.instances if p.env["TERRA_XFER_INSTANCE_ID"].startswith(KEEPER)]
    assert len(set(ids)) == sum(pods.numbers.values()) > len(pods.replicated) + len(pods.single)
    for proc in starts:
        name = proc.env["TERRA_XFER_INSTANCE_ID"]
        assert proc.env["TERRA_XFER_STATUS_KEEPER_PATH"].endswith(f"pods/{name}/keeper.sqlite")
        assert proc.argv[-1] == KEEPER
    assert any(d.startswith("restart") for d in done)  # same id, so fewer ids than starts
    assert len(ids) > len(set(ids))


def test_a_frozen_pod_is_resumed_when_due_and_stop_all_leaves_none_stopped(pods: Pods) -> None:
    keeper = pods.start(KEEPER)
    proc = StandIn.instances[-1]
    pods.freeze(keeper, until=10.0)
    pods.tick(9.0)
    assert proc.stopped and not pods.settled
    pods.tick(10.0)
    assert not proc.stopped and pods.settled
    pods.freeze(keeper, until=99.0)
    pods.stop_all()
    assert not proc.stopped and proc.returncode == 0


def test_a_seed_always_gives_the_same_night(tmp_path: Path, pods: Pods) -> None:
    _, first = night(pods, seed=5, events=30)
    again = Pods(tmp_path / "again.toml", {}, tmp_path / "again", registry.running(Config()))
    _, second = night(again, seed=5, events=30)
    assert first == second


def test_a_stage_at_three_replicas_gets_no_fourth(pods: Pods) -> None:
    for stage in pods.replicated:
        for _ in range(3):
            pods.start(stage)
    scaler = Scaler(pods, random.Random(1), events=100)
    for n in range(14):  # two decks: every kind twice, where possible
        scaler.fire(float(n))
        assert all(len(pods.of(s)) <= 3 for s in pods.replicated), scaler.fired
    assert scaler.fired["add"] + scaler.fired["rolling-update"] > 0  # after a removal
