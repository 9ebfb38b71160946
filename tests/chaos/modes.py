"""The three ways a chaos run hits the pipeline, behind one face for the run's loop.

``stages``: every stage as one process, a random one SIGKILLed at each strike (and the broker
killed and restarted once, half way). ``up``: the stages under ``terra-xfer up``, ``up`` itself
SIGKILLed at each strike. ``scale-out``: every consuming stage as 1 to 3 pods, each strike a scale
event (:mod:`tests.chaos.scale`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from terra_xfer.broker import EmbeddedBroker
from terra_xfer.config import load
from terra_xfer.stages.spec import StageSpec
from tests.chaos.janitor import Janitor
from tests.chaos.pods import Pods
from tests.chaos.scale import KEEPER, Scaler
from tests.chaos.stages import Stages, Supervised

MODES = ("stages", "up", "scale-out")


class Chaos(Protocol):
    """What the run's loop drives."""

    def start(self) -> None: ...

    def tick(self, now: float) -> None:
        """Called at every turn of the loop: restart what ended, resume what is due."""

    def strike(self, rng: random.Random, n: int, now: float) -> str:
        """Strike ``n`` (from 0) of the night; returns what was done, for the log."""

    @property
    def settled(self) -> bool:
        """Nothing left half done (no pod frozen or on its way out)."""

    def stop_all(self) -> dict[str, int | None]: ...

    def figures(self) -> dict[str, Any]:
        """The report's figures of what was done."""


class Killing:
    """``stages`` and ``up``: a SIGKILL at each strike, the broker restarted at the middle one."""

    def __init__(
        self,
        stages: Stages,
        broker: EmbeddedBroker,
        kills: int,
        say: Callable[[str], None],
        janitor: Janitor,
    ) -> None:
        self.stages, self.broker, self.kills, self.say = stages, broker, kills, say
        self.janitor = janitor
        self.broker_restarts = 0

    def start(self) -> None:
        self.stages.start_all()

    def tick(self, now: float) -> None:
        self.stages.revive()
        self.janitor.tick(now)

    def strike(self, rng: random.Random, n: int, now: float) -> str:
        if n == self.kills // 2 and not self.broker_restarts:
            self.say("kill -9 broker")
            self.broker.kill()
            self.broker.start(timeout_s=120)
            self.broker_restarts += 1
            self.janitor.broker_restarted(now)
        victim = rng.choice(self.stages.victims)
        self.stages.kill(victim)
        return f"kill -9 {victim}"

    @property
    def settled(self) -> bool:
        return True

    def stop_all(self) -> dict[str, int | None]:
        return self.stages.stop_all()

    def figures(self) -> dict[str, Any]:
        return {
            "kills": dict(self.stages.kills),
            "broker_restarts": self.broker_restarts,
            "unexpected_exits": dict(self.stages.unexpected_exits),
            "restarted_by_up": self.stages.restarted_by_up,
            "orphans": list(self.stages.orphans),
            "hanging_aborted": [
                f"{h.topic}[{h.partition}]@{h.start_offset}" for h in self.janitor.aborted
            ],
        }


class ScaleOut:
    """``scale-out``: pods of every stage, a scale event at each strike."""

    def __init__(self, pods: Pods, scaler: Scaler) -> None:
        self.pods, self.scaler = pods, scaler

    def start(self) -> None:
        """The night's pods, once the keepers are ready (a night starts on a deployment that
        runs): the keeper the first event adds finds peers to seed its copy from."""
        self.scaler.start()
        self.pods.wait_ready(self.pods.of(KEEPER))

    def tick(self, now: float) -> None:
        self.pods.tick(now)

    def strike(self, rng: random.Random, n: int, now: float) -> str:
        return self.scaler.fire(now)

    @property
    def settled(self) -> bool:
        return self.pods.settled

    def stop_all(self) -> dict[str, int | None]:
        return self.pods.stop_all()

    def figures(self) -> dict[str, Any]:
        return {
            "kills": dict(self.scaler.hit),
            "scale_events": dict(self.scaler.fired),
            "pods_started": sum(self.pods.numbers.values()),
            "copies_seeded": dict(self.pods.seeded()),
            "unexpected_exits": dict(self.pods.unexpected_exits),
            "slow_stops": list(self.pods.slow_stops),
        }


def chaos(
    mode: str,
    strikes: int,
    rng: random.Random,
    launch: tuple[Path, dict[str, str], Path],
    specs: Sequence[StageSpec],
    broker: EmbeddedBroker,
    say: Callable[[str], None],
) -> Chaos:
    """The :class:`Chaos` of ``mode``; ``launch``: the config file, environment and work
    directory the stages run with."""
    config, env, work = launch
    if mode == "scale-out":
        pods = Pods(config, env, work, specs)
        # Its own generator: the events of a seed do not depend on when faults fired.
        return ScaleOut(pods, Scaler(pods, random.Random(rng.getrandbits(64)), strikes))
    kind = {"stages": Stages, "up": Supervised}[mode]
    janitor = Janitor(load(config, env))
    return Killing(kind(config, env, work / "logs", specs), broker, strikes, say, janitor)
