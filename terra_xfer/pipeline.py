"""Every stage of the pipeline, built from one configuration, for `terra-xfer up`.

Each stage gets its own Kafka clients and consumer group, exactly as it would in its own Kubernetes
Deployment; they share only the transfer backend (whose task records live on disk) and the stop
event of the runner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from terra_xfer.config import Config
from terra_xfer.runner import Stage


@contextlib.contextmanager
def build(config: Config, with_sweeper: bool = True) -> Iterator[list[tuple[str, Stage]]]:
    """The stages to run, and everything they hold, released when the block ends."""
    from consumers.backends import make_catalog, make_transfer
    from consumers.batcher import Batcher
    from consumers.deleter import Deleter
    from consumers.ingest import Ingest
    from consumers.monitor import Monitor
    from consumers.state_keeper import StateKeeper
    from consumers.state_view import StateFollower
    from consumers.sweeper import Sweeper
    from producers.gantry.service import GantryProducer, log_source

    with contextlib.ExitStack() as held:
        backend = make_transfer(config)
        held.callback(backend.close)
        index = config.status.index_path

        def view(name: str) -> Any:
            follower = StateFollower(config, index.with_name(name))
            held.callback(follower.close)
            return follower

        stages: list[tuple[str, Stage]] = [
            ("gantry", GantryProducer(config, log_source(config, "xferlog")))
        ]
        if config.gantry.nas_log is not None:
            stages.append(("gantry-nas", GantryProducer(config, log_source(config, "nas_log"))))
        if config.danforth.enabled:
            from producers.danforth.service import DanforthProducer

            stages.append(("danforth", DanforthProducer(config)))
        stages += [
            ("batcher", Batcher(config, backend, view("batcher-view.sqlite"))),
            ("monitor", Monitor(config, backend)),
            ("state-keeper", StateKeeper(config)),
            ("ingest", Ingest(config, make_catalog(config))),
        ]
        if config.deleter.enabled:
            stages.append(("deleter", Deleter(config, backend)))
        if with_sweeper:
            stages.append(("sweeper", Sweeper(config, view("sweeper-view.sqlite"))))
        yield stages
