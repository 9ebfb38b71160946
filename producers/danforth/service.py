"""The Danforth producer: polls the LemnaTec database and ships each completed snapshot.

A poll reads the snapshots after a position (and the ones still waiting to be completed) and
plans them; their images are queued on the pool at once. A step polls ahead (a second plan after
the first one's position), then waits for the oldest plan's files and commits in ONE Kafka
transaction every snapshot's events (its metadata file first, then one FileArrived per image, and
a dead letter per image that could not be made) together with the plan's position; so the pool
makes the next plan's images while this one is committed, and plans are committed in order.
After a kill -9 the next incarnation (same transactional id) fences the old one, whose open
transaction is aborted, reads the last committed position and makes those snapshots again: none
is lost, none emitted twice.

An incomplete snapshot (an image dead-lettered) says so in its metadata (``complete``,
``missing_images``), in the log, and in ``terra_xfer_danforth_snapshots_total{outcome}``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from producers.checkpoints import checkpoint_output, last_checkpoint
from producers.danforth.cameras import Cameras
from producers.danforth.errors import DanforthError
from producers.danforth.events import arrivals, image_dead_letter, snapshot_dead_letter
from producers.danforth.lemnatec import LemnaTecDb
from producers.danforth.materialise import Made, Materialiser, Pending, Sources
from producers.danforth.progress import Plan, Position, plan
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.sites.danforth import SENSOR
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.outputs import Output, now_ms
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import DEADLETTER, FILES_ARRIVED

log = logging.getLogger(__name__)
SOURCE = "danforth"
# Plans in flight: the one whose files are finished and committed, and the next one, whose
# images the pool makes meanwhile. Memory stays bounded by the pool (each thread holds one
# frame, its picture and its PNG); queued images are only their database rows.
PLANS_IN_FLIGHT = 2

SNAPSHOTS = Counter(
    "terra_xfer_danforth_snapshots_total",
    "Danforth snapshots shipped, by outcome (complete, incomplete, watering, given_up).",
    ["outcome"],
    registry=metrics.REGISTRY,
)
POLL_ERRORS = Counter(
    "terra_xfer_danforth_poll_errors_total",
    "Danforth polls that failed reading the LemnaTec database or blob store (retried).",
    registry=metrics.REGISTRY,
)
# Labelled, so only the Danforth producer exports it (from its start), never every process that
# imports this module: a producer that is gone reads as absent, which its alert watches.
LAST_SNAPSHOT = Gauge(
    "terra_xfer_danforth_last_snapshot_id",
    "Highest LemnaTec snapshot id the Danforth producer has committed past, by database.",
    ["database"],
    registry=metrics.REGISTRY,
    multiprocess_mode="mostrecent",
)


@dataclass(frozen=True)
class InFlight:
    """A plan whose images are queued or being made (its ``ready`` snapshots with tiles)."""

    plan: Plan
    pending: Pending


class DanforthProducer:
    """Polls one LemnaTec database; ``step`` ships up to ``chunk_snapshots`` snapshots."""

    def __init__(
        self,
        config: Config,
        spec: StageSpec,
        db: LemnaTecDb | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        d = config.danforth
        self.config = config
        self.clock = clock
        self.db = db or LemnaTecDb(d.dsn, d.password)
        self.source_id = f"{SOURCE}:{self.db.database}"
        sources = Sources(d.blob_root, self.db.database, Cameras(d.cameras))
        self.materialiser = Materialiser(d.cache_root, sources, d.png_level, d.workers)
        # One writer per database: a restart fences its previous incarnation by this id.
        self.kafka = StageKafka(
            config, spec, transactional_id=config.group(f"danforth-{self.db.database}")
        )
        self.codec = self.kafka.codec
        self.position: Position | None = None  # the committed position
        # Plans polled and queued, oldest first: each planned after the one before it and
        # committed only after it, so the committed position always covers a prefix of them.
        self.in_flight: deque[InFlight] = deque()
        self.events = 0
        self.next_poll = 0.0

    def start(self) -> None:
        """Fence the previous incarnation and read the last committed position."""
        if self.position is not None:
            return
        self.kafka.start()
        stored = last_checkpoint(self.config, self.source_id)
        self.position = Position.from_dict(stored["position"]) if stored else Position()
        self.events = int(stored["events"]) if stored else 0
        LAST_SNAPSHOT.labels(self.db.database).set(self.position.last_id)
        log.info(
            "danforth: following %s after snapshot %d (%d waiting to complete)",
            self.db.database,
            self.position.last_id,
            len(self.position.waiting),
        )

    def step(self) -> int:
        """Ship the next snapshots; return how many were shipped or given up (0: nothing new).

        Polls ahead first (up to ``PLANS_IN_FLIGHT`` plans, each queued on the pool at once),
        then waits for the oldest plan's files and commits it: the next plan's images are made
        while this one's metadata is written and its transaction committed.
        """
        self.start()
        self._plan_ahead()
        if not self.in_flight:
            return 0
        head = self.in_flight[0]
        try:
            made = self.materialiser.finish(head.pending)
            self._commit(head.plan, made)
        except TransientError as exc:
            self._drop_in_flight()
            if not isinstance(exc, DanforthError):
                raise  # a failed commit: the host retries the step after its backoff
            self._poll_failed(exc)  # the blob store or the cache: polled again after poll_s
            return 0
        except BaseException:
            self._drop_in_flight()
            raise
        self.in_flight.popleft()
        return len(head.plan.ready) + len(head.plan.given_up)

    def _plan_ahead(self) -> None:
        """Poll after the last planned position and queue the plan's images, while fewer than
        ``PLANS_IN_FLIGHT`` plans are in flight and a poll is due."""
        d = self.config.danforth
        while len(self.in_flight) < PLANS_IN_FLIGHT and self.clock() >= self.next_poll:
            after = self.in_flight[-1].plan.position if self.in_flight else self.position
            assert after is not None
            try:
                newer = self.db.newer(after.last_id, d.chunk_snapshots)
                waited = self.db.by_id(sorted(after.waiting))
                todo = plan(after, newer, waited, now_ms(), int(d.give_up_after_s * 1000))
                ready = self.db.with_tiles(todo.ready) if todo.ready else []
                pending = self.materialiser.submit(ready)
            except TransientError as exc:
                self._poll_failed(exc)
                return
            # A full chunk means more may be there already: poll again at once.
            full = len(newer) >= d.chunk_snapshots
            self.next_poll = 0.0 if full else self.clock() + d.poll_s
            if todo.position == after:
                return
            self.in_flight.append(InFlight(todo, pending))

    def _drop_in_flight(self) -> None:
        """Drop every plan in flight once its running images have ended. Each was planned after
        the one before it, so none may be committed before the oldest is: their snapshots are
        polled and made again from the committed position."""
        self.materialiser.abandon(*(f.pending for f in self.in_flight))
        self.in_flight.clear()

    def _poll_failed(self, exc: TransientError) -> None:
        """Count a poll that failed for a reason that passes, and poll again after ``poll_s``."""
        d = self.config.danforth
        POLL_ERRORS.inc()
        log.warning("danforth: %s; trying again in %.1f s", exc, d.poll_s)
        self.next_poll = self.clock() + d.poll_s

    def _commit(self, todo: Plan, made: list[Made]) -> None:
        """Every event of the plan and the position after it, in one transaction."""
        emitted = now_ms()
        outputs: list[Output] = []
        for one in made:
            outputs += self._snapshot_outputs(one, emitted)
        for gone in todo.given_up:
            value = snapshot_dead_letter(gone, self.db.database, emitted)
            outputs.append(self._dead_letter(value))
        events = self.events + sum(1 for o in outputs if o.topic.endswith(FILES_ARRIVED))
        outputs.append(
            checkpoint_output(
                self.config, self.codec, self.source_id, todo.position.to_dict(), events
            )
        )
        self.kafka.commit(outputs)
        self.position, self.events = todo.position, events
        self._report(todo, made)

    def _snapshot_outputs(self, made: Made, emitted_ms: int) -> list[Output]:
        d = self.config.danforth
        topic = self.config.topic(FILES_ARRIVED)
        values = arrivals(made, d.site, self.db.database, d.timezone, emitted_ms)
        outputs = [Output(topic, v["key"], self.codec.encode("FileArrived", v)) for v in values]
        for failure in made.failures:
            outputs.append(self._dead_letter(image_dead_letter(failure, d.site, emitted_ms)))
        return outputs

    def _dead_letter(self, value: dict[str, object]) -> Output:
        return Output(self.config.topic(DEADLETTER), SOURCE, self.codec.encode("DeadLetter", value))

    def _report(self, todo: Plan, made: list[Made]) -> None:
        """Log and count what was just committed."""
        for one in made:
            files = [one.metadata_file, *one.images]
            for f in files:
                metrics.count_file("arrived", SENSOR, f.size)
            for failure in one.failures:
                metrics.DEAD_LETTERS.labels(SOURCE, f"{failure.error.kind}_image").inc()
                log.warning(
                    "danforth: snapshot %d: %s dead-lettered: %s",
                    one.snapshot.id,
                    failure.name,
                    failure.error.reason,
                )
            SNAPSHOTS.labels(_outcome(one)).inc()
            if one.failures:
                log.warning(
                    "danforth: snapshot %d is incomplete: %d of %d images shipped",
                    one.snapshot.id,
                    len(one.images),
                    len(one.snapshot.tiles),
                )
        for gone in todo.given_up:
            SNAPSHOTS.labels("given_up").inc()
            metrics.DEAD_LETTERS.labels(SOURCE, "snapshot_given_up").inc()
            log.warning("danforth: %s: dead-lettered", gone.reason)
        LAST_SNAPSHOT.labels(self.db.database).set(todo.position.last_id)
        if made:
            log.info(
                "danforth: shipped snapshots %d..%d (%d files); position %d, %d waiting",
                made[0].snapshot.id,
                made[-1].snapshot.id,
                sum(1 + len(m.images) for m in made),
                todo.position.last_id,
                len(todo.position.waiting),
            )

    def close(self) -> None:
        try:
            self.in_flight.clear()
            self.materialiser.close()
            self.db.close()
        finally:
            self.kafka.close()


def _outcome(made: Made) -> str:
    if not made.snapshot.tiles:
        return "watering"
    return "incomplete" if made.failures else "complete"
