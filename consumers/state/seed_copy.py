"""Seeding an empty local copy of files.state from a peer's snapshot (see
:mod:`terra_xfer.seeding`): fetched beside the copy, checked, moved into its place."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from consumers.state.sqlite_file import SqliteFile
from terra_xfer import metrics, seeding
from terra_xfer.stages.spec import Alive, Waiting

log = logging.getLogger(__name__)


def seed_copy(
    copy: SqliteFile,
    name: str,
    topic: str,
    seed_from: Sequence[str],
    progress: Waiting,
    alive: Alive,
) -> bool:
    """Make ``copy``, when it holds nothing and ``seed_from`` names peers, the first snapshot of
    copy ``name`` of ``topic`` a peer gives that checks out; whether it did. ``progress`` (the
    stage's readiness) hears how far it is while it waits and while the snapshot comes, and
    ``alive`` (the stall guard) that it goes on."""
    target = seeding.seed_of(copy.path)
    target.unlink(missing_ok=True)  # one an earlier process left when it was killed
    if not seed_from or copy.holds_anything():
        return False
    started = time.monotonic()
    told: list[str] = []

    def tell(why: str) -> None:
        log.info("%s", why)
        told.append(why)
        progress(why)
        alive()

    try:
        peer = seeding.fetch(name, topic, seed_from, target, tell, copy.check_snapshot)
        if peer is None:
            metrics.COPY_SEEDS.labels(name, "none").inc()
            log.info("%s: no peer gave a copy; rebuilding it from %s", name, topic)
            return False
        copy.install(target)
    finally:
        target.unlink(missing_ok=True)
        if told:
            progress(None)  # readiness no longer waits on the seeding
    metrics.COPY_SEEDS.labels(name, "seeded").inc()
    log.info(
        "%s: seeded from %s in %.1f s; reading what %s gained since",
        name,
        peer,
        time.monotonic() - started,
        topic,
    )
    return True
