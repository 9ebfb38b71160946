"""Scale events for the scale-out chaos mode: what Kubernetes (and bad luck) does to pods at night.

Each event is one of :data:`KINDS`, drawn from a seeded, shuffled deck (so a short night still meets
every kind) among those possible at that moment, and keeps every replicated stage at 1 to 3 serving
replicas. In the first half of the events the state keeper keeps at least 2. The first event
adds a state keeper once the night's keepers are ready: a replica on a new claim, which seeds its
copy of files.state from theirs.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from tests.chaos.pods import Pod, Pods

MAX_REPLICAS = 3
FREEZE_S = (3.0, 12.0)  # longer than a poll interval; past 10 s the group session expires too
OVERLAP_S = (2.0, 5.0)  # a rolling update's new pod runs this long beside the old one
KEEPER = "state-keeper"
KINDS = (
    "add",  # scale up: a new pod
    "sigterm",  # scale down: a pod told to stop
    "sigkill",  # a pod lost at once (its node gone)
    "restart",  # a container killed and restarted in its pod (same instance id)
    "sigstop",  # a pod frozen for a while, then resumed
    "rolling-update",  # a new pod started, an old one SIGTERMed a few seconds later
    "producer-restart",  # a producer killed and restarted in its pod
)


class Scaler:
    """Fires the scale events of one night on ``pods``; ``events`` is how many in all."""

    def __init__(self, pods: Pods, rng: random.Random, events: int) -> None:
        self.pods, self.rng, self.events = pods, rng, events
        self.fired: Counter[str] = Counter()  # by kind
        self.hit: Counter[str] = Counter()  # by stage
        self._deck: list[str] = []

    def start(self) -> None:
        """Start the night's pods: 2 state keepers (the first event adds a third), 1 or 2 of
        every other replicated stage, one of each producer."""
        for stage in self.pods.replicated:
            for _ in range(2 if stage == KEEPER else self.rng.randint(1, 2)):
                self.pods.start(stage)
        for stage in self.pods.single:
            self.pods.start(stage)

    def fire(self, now: float) -> str:
        """One event: the first adds a state keeper (when it may), the others are the first
        possible kind of the deck, else any possible kind (the deck keeps its own for later);
        returns what was done, for the log."""
        if not self.fired and self._targets("add", KEEPER):  # a new claim, seeded from a peer's
            self.fired["add"] += 1
            self.hit[KEEPER] += 1
            self._deck = [k for k in self.rng.sample(KINDS, len(KINDS)) if k != "add"]
            return f"add: started {self.pods.start(KEEPER).name}"
        if not self._deck:
            self._deck = self.rng.sample(KINDS, len(KINDS))
        for kind in [*self._deck, *self.rng.sample(KINDS, len(KINDS))]:
            stages = [s for s in self._stages_for(kind) if self._targets(kind, s)]
            if stages:
                if kind in self._deck:
                    self._deck.remove(kind)
                weights = [2.0 if s == KEEPER else 1.0 for s in stages]
                stage = self.rng.choices(stages, weights)[0]
                done = self._act(kind, stage, now)
                self.fired[kind] += 1
                self.hit[stage] += 1
                return f"{kind}: {done}"
        raise AssertionError("no scale event is possible")  # a producer restart always is

    def _stages_for(self, kind: str) -> tuple[str, ...]:
        return self.pods.single if kind == "producer-restart" else self.pods.replicated

    def _floor(self, stage: str) -> int:
        """The fewest serving replicas ``stage`` may be left with."""
        first_half = sum(self.fired.values()) < self.events // 2
        return 2 if stage == KEEPER and first_half else 1

    def _targets(self, kind: str, stage: str) -> list[Pod]:
        """The pods of ``stage`` that ``kind`` may hit now ([] when it may not happen)."""
        serving = self.pods.of(stage)
        free = [p for p in serving if p.free]
        if kind == "add":
            return serving if len(serving) < MAX_REPLICAS else []
        if kind in ("sigterm", "sigkill"):
            return free if len(serving) > self._floor(stage) else []
        if kind == "rolling-update":
            return free if len(serving) < MAX_REPLICAS else []
        return free

    def _act(self, kind: str, stage: str, now: float) -> str:
        pod = self.rng.choice(self._targets(kind, stage))  # for "add", any: unused
        actions: dict[str, Callable[[], str]] = {
            "add": lambda: f"started {self.pods.start(stage).name}",
            "sigterm": lambda: self._terminate(pod, now),
            "sigkill": lambda: self._kill(pod),
            "restart": lambda: f"restarted {self.pods.restart(pod).name}",
            "producer-restart": lambda: f"restarted {self.pods.restart(pod).name}",
            "sigstop": lambda: self._freeze(pod, now),
            "rolling-update": lambda: self._roll(pod, now),
        }
        return actions[kind]()

    def _terminate(self, pod: Pod, now: float) -> str:
        self.pods.terminate(pod, now)
        return f"SIGTERM {pod.name}"

    def _kill(self, pod: Pod) -> str:
        self.pods.kill(pod)
        return f"SIGKILL {pod.name}"

    def _freeze(self, pod: Pod, now: float) -> str:
        seconds = self.rng.uniform(*FREEZE_S)
        self.pods.freeze(pod, now + seconds)
        return f"SIGSTOP {pod.name} for {seconds:.1f} s"

    def _roll(self, old: Pod, now: float) -> str:
        new = self.pods.start(old.stage)
        old.leave_at = now + self.rng.uniform(*OVERLAP_S)
        return f"started {new.name}, {old.name} to get SIGTERM in {old.leave_at - now:.1f} s"
