"""Every stage of the pipeline, built from one configuration, for `terra-xfer up`.

Each stage gets its own Kafka clients and consumer group, exactly as it would in its own Kubernetes
Deployment. Built together (:func:`build`, every stage a thread of one process) they share only the
transfer backend (whose task records live on disk) and the stop event of the runner; built one at
a time (:func:`build_one`, a stage per process) each holds its own, as its Deployment would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from terra_xfer.config import Config
from terra_xfer.runner import Stage


def stage_names(config: Config, with_sweeper: bool = True) -> list[str]:
    """The stages ``up`` runs for ``config``, in start order."""
    names = ["gantry"]
    if config.gantry.nas_log is not None:
        names.append("gantry-nas")
    if config.danforth.enabled:
        names.append("danforth")
    names += ["batcher", "monitor", "state-keeper", "ingest"]
    if config.deleter.enabled:
        names.append("deleter")
    if with_sweeper:
        names.append("sweeper")
    return names


@contextlib.contextmanager
def build(config: Config, with_sweeper: bool = True) -> Iterator[list[tuple[str, Stage]]]:
    """The stages to run, and everything they hold, released when the block ends."""
    from consumers.backends import make_transfer

    with contextlib.ExitStack() as held:
        backend = make_transfer(config)
        held.callback(backend.close)
        stages = [
            (name, _make(config, name, held, lambda: backend))
            for name in stage_names(config, with_sweeper)
        ]
        yield stages


@contextlib.contextmanager
def build_one(config: Config, name: str) -> Iterator[Stage]:
    """One stage by its name, with a transfer backend of its own if it needs one."""
    from consumers.backends import make_transfer

    with contextlib.ExitStack() as held:

        def own_backend() -> Any:
            backend = make_transfer(config)
            held.callback(backend.close)
            return backend

        yield _make(config, name, held, own_backend)


def _make(
    config: Config, name: str, held: contextlib.ExitStack, backend: Callable[[], Any]
) -> Stage:
    """The stage called ``name``; what it holds is released by ``held``."""
    from consumers.backends import make_catalog
    from consumers.batcher import Batcher
    from consumers.deleter import Deleter
    from consumers.ingest import Ingest
    from consumers.monitor import Monitor
    from consumers.state.keeper import StateKeeper
    from consumers.state.view import StateFollower
    from producers.gantry.service import GantryProducer, log_source
    from producers.sweeper import Sweeper

    def view(file_name: str, **kind: bool) -> Any:
        follower = StateFollower(config, config.status.index_path.with_name(file_name), **kind)
        held.callback(follower.close)
        return follower

    if name == "gantry":
        return GantryProducer(config, log_source(config, "xferlog"))
    if name == "gantry-nas":
        return GantryProducer(config, log_source(config, "nas_log"))
    if name == "danforth":
        from producers.danforth.service import DanforthProducer

        return DanforthProducer(config)
    if name == "batcher":
        return Batcher(config, backend(), view("batcher-view.sqlite", transferred_only=True))
    if name == "monitor":
        return Monitor(config, backend())
    if name == "state-keeper":
        return StateKeeper(config)
    if name == "ingest":
        return Ingest(config, make_catalog(config))
    if name == "deleter":
        return Deleter(config, backend())
    if name == "sweeper":
        return Sweeper(config, view("sweeper-view.sqlite", records=False))
    raise ValueError(f"no stage called {name!r}")
