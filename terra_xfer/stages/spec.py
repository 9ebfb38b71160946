"""The shape of a stage's entry in the registry (:mod:`terra_xfer.stages.registry`).

Only the type lives here, below the stages themselves: a stage is handed its own entry when it is
built, and reads its consumer group, topics and accepted records from it, so none of them is
written anywhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from terra_xfer.config import Config


class Stage(Protocol):
    """One running stage: ``step`` does one bounded unit of work and says how many items it
    handled (0: nothing to do); ``close`` releases what the stage opened itself."""

    def step(self) -> int: ...

    def close(self) -> None: ...


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)
# Where a stage, or what it holds, says why it waits (None: it no longer does).
Waiting = Callable[[str | None], None]


def unheard(_why: str | None) -> None:
    """A :data:`Waiting` that tells no one (a stage run without a readiness endpoint)."""


# Where a stage's running step says it is getting on (a long catch-up reading on): it is not
# stalled, however long the step has run (see terra_xfer.stages.stall_guard).
Alive = Callable[[], None]


def unwatched() -> None:
    """An :data:`Alive` that tells no one (a stage run without a stall guard)."""


@dataclass(frozen=True)
class Wiring:
    """What a stage is built from: the configuration, its registry entry, the exit stack that
    releases what the stage was given (backends, views) after the stage itself is closed,
    where it says why it waits (shown by /readyz and ``up``; None: it no longer waits), and
    where a long step says it is getting on (``alive``, told to the stall guard)."""

    config: Config
    spec: StageSpec
    held: contextlib.ExitStack
    waiting: Waiting = unheard
    alive: Alive = unwatched

    def hold(self, thing: C) -> C:
        """``thing``, closed when the stage's resources are released."""
        self.held.callback(thing.close)
        return thing


Factory = Callable[[Wiring], Stage]


@dataclass(frozen=True)
class Mount:
    """A PersistentVolumeClaim mounted into a stage's container."""

    claim: str
    path: str
    read_only: bool


@dataclass(frozen=True)
class Resources:
    """A container's CPU and memory requests and limits. The memory request is at least the
    stage's peak RSS as measured (``bench.scale``: a million files, nights of 100,000;
    BENCHMARKS.md, "Scale"), the limit a quarter or more above it: the overlays change CPU only."""

    cpu_request: str = "100m"
    memory_request: str = "256Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"


@dataclass(frozen=True)
class Scaling:
    """KEDA scales the stage between 1 replica and one per partition on its group's lag: a
    replica is added for every ``lag_threshold`` messages not yet consumed on any input."""

    lag_threshold: int


@dataclass(frozen=True)
class Deployment:
    """What a stage needs from Kubernetes.

    ``single``: never two copies at once (one transactional producer per source, one walker of the
    cache), so it rolls with ``Recreate`` instead of surging a second pod (a stage with a copy of
    files.state is a StatefulSet, which replaces a pod only once it is gone: the same guarantee). ``scaling``: how KEDA
    scales a stage that may run as several replicas (None: one replica). ``component``: the
    kustomize component that holds it, for a stage only some sites run ("" = the base).
    ``copy_bytes_per_file``: the bytes on disk per file of the local copy of files.state the stage
    keeps (0: none), for sizing its state volume (``terra_xfer.k8s.state_volume_gi``);
    ``copy_keeps_history``: the copy holds every file ever shipped (the status index), so its
    volume is sized for the site's lifetime rather than the retention window.
    """

    mounts: tuple[Mount, ...] = ()
    secrets: tuple[tuple[str, str, str], ...] = ()  # (env var, Secret name, key)
    single: bool = False
    scaling: Scaling | None = None
    resources: Resources = Resources()
    component: str = ""
    copy_bytes_per_file: int = 0
    copy_keeps_history: bool = False


def always(_config: Config) -> bool:
    return True


@dataclass(frozen=True)
class StageSpec:
    """One stage: everything the CLI, ``up``, lag, the Kubernetes generator and the tests know of it.

    ``summary`` is its line in ``terra-xfer --help``, ``help`` its command's own help. ``group`` is
    the consumer group (a catalogue name, prefixed like the topics) of a stage that
    consumes; ``inputs`` and ``outputs`` are catalogue topic names; ``accepts`` the records it
    takes from its inputs (any other is dead-lettered). ``command`` is how ``terra-xfer`` runs it,
    as Kubernetes and the chaos runner call it; ``runs_when`` whether ``up`` runs it under a
    configuration.
    """

    name: str
    summary: str
    build: Factory
    help: str = ""
    group: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    accepts: frozenset[str] = frozenset()
    command: tuple[str, ...] = ()
    runs_when: Callable[[Config], bool] = always
    deployment: Deployment | None = field(default_factory=Deployment)

    @property
    def argv(self) -> tuple[str, ...]:
        """The ``terra-xfer`` arguments that run this stage on its own."""
        return self.command or (self.name,)

    def consumer_group(self, config: Config) -> str:
        """The full consumer group name under ``config``."""
        if self.group is None:
            raise ValueError(f"stage {self.name} consumes nothing and has no consumer group")
        return config.group(self.group)
