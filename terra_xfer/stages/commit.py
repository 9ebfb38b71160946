"""The one transactional commit path every Kafka-writing stage uses.

:class:`StageKafka` holds a stage's Kafka clients, made from its registry entry: a static member of
its consumer group on its input topics (for a stage that consumes) and a transactional producer.

The commit order is fixed here and nowhere else:

1. the step's side effects (a transfer submitted, a catalog entry, a file removed) are done first,
   outside Kafka, and are idempotent;
2. then, in ONE transaction, the step's output events, in the order given, and the consumed
   offsets (or, for a producer, the checkpoint event that records its input position);
3. on any failure the transaction is aborted and the stage goes back to what it last committed:
   the consumer is put back at its committed offsets and the stage's ``on_rewind`` hook forgets what
   it held of the aborted input (open windows, followed tasks, a tailer's position). The error is
   re-raised for the host's one retry policy (:mod:`terra_xfer.stages.host`).

Stages with more than one transaction per step use the same method for each: the batcher commits its
PREPARED batches with their window's offsets, submits, then commits SUBMITTED with no offsets; the
monitor passes offsets that stop at its oldest unfinished batch, and ingest at its oldest file still
waiting for another catalog attempt.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError
from terra_xfer.kafka import (
    TxProducer,
    check,
    consume_ready,
    instance_id,
    member_consumer,
    rewind_to_committed,
)
from terra_xfer.stages.outputs import Decoded, Output, decode_or_dead_letter
from terra_xfer.stages.spec import StageSpec

log = logging.getLogger(__name__)
Rebalance = Callable[[Consumer, list[TopicPartition]], None]
# The longest a subscribed consumer may go without being given its share of partitions (even an
# empty one) before its process ends to be started afresh. A join takes seconds (a session of
# 10 s when a member vanished); minutes mean a client that will not join any more, which a broker
# killed at the moment it subscribed has been seen to leave behind.
JOIN_DEADLINE_S = 120.0


class NotJoined(PermanentError):
    """A stage's consumer has not joined its group for ``JOIN_DEADLINE_S``: the process ends, and
    its supervisor starts one with fresh clients."""


class StageKafka:
    """One stage instance's consumer (if it consumes) and transactional producer.

    ``transactional_id`` defaults to ``<group>-<instance>``: one per replica, stable across its
    restarts, so a restarted replica fences its previous incarnation. A producer that owns a source
    (a log, a database) names it after the source instead: one writer per source, whatever the host.
    No network call is made before :meth:`start`.
    """

    def __init__(
        self,
        config: Config,
        spec: StageSpec,
        *,
        transactional_id: str | None = None,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.codec = Codec()
        self.topics = [config.topic(t) for t in spec.inputs]
        self.consumer: Consumer | None = None
        if spec.inputs:
            group = spec.consumer_group(config)
            self.consumer = member_consumer(config.kafka, group, consumer_overrides)
            transactional_id = transactional_id or f"{group}-{instance_id(config.kafka)}"
        if transactional_id is None:
            raise ValueError(f"stage {spec.name} consumes nothing: name its transactional id")
        self.producer = TxProducer(config.kafka, transactional_id)
        self._on_rewind: Callable[[], None] | None = None
        self._rebalances = 0  # rebalance callbacks run so far
        self.clock: Callable[[], float] = time.monotonic
        self._unassigned_since: float | None = None  # subscribed, or lost, and not given any since
        self._started = False
        self._rewound_for: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._started

    def start(
        self,
        *,
        on_assign: Rebalance | None = None,
        on_revoke: Rebalance | None = None,
        on_rewind: Callable[[], None] | None = None,
    ) -> bool:
        """Fence earlier incarnations and join the group, once; True the first time.

        ``on_assign``/``on_revoke`` run on rebalances; ``on_rewind`` after every failed attempt, once
        the consumer is back at its committed offsets.
        """
        if self._started:
            return False
        self.producer.init()
        if self.consumer is not None:
            self._unassigned_since = self.clock()
            self.consumer.subscribe(
                self.topics,
                on_assign=self._told("assigned", on_assign),
                on_revoke=self._told("revoked", on_revoke),
                on_lost=self._told("lost", on_revoke),
            )
        self._on_rewind = on_rewind
        self._started = True
        return True

    def _told(self, what: str, then: Rebalance | None) -> Rebalance:
        """A rebalance callback that logs the partitions (a stage's ownership changes are worth a
        line), then runs the stage's own."""

        def callback(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self._rebalances += 1
            if what == "assigned":
                self._unassigned_since = None
            elif what == "lost":
                self._unassigned_since = self.clock()
            named = _partitions(partitions) or "nothing"
            log.info("%s: %s %s", self.spec.name, what, named)
            if then is not None:
                then(consumer, partitions)

        return callback

    def read(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` consumed messages carrying data (see ``consume_ready``).

        A read during which the group rebalanced returns nothing and puts the consumer back at
        the committed offsets of what it holds now: messages fetched before the rebalance may
        belong to partitions given to another member, yet a commit made after it would carry
        the new generation and be accepted, so they are never handled.
        """
        assert self.consumer is not None, f"stage {self.spec.name} consumes nothing"
        rebalances = self._rebalances
        consumed = consume_ready(self.consumer, max_messages, timeout_s)
        self._check_joined()
        ready = [m for m in consumed if check(m) is not None]  # an error raises, rebalance or not
        if self._rebalances != rebalances:
            if ready:
                log.info(
                    "%s: the group rebalanced during a read; its %d messages are read again from"
                    " the committed offsets",
                    self.spec.name,
                    len(ready),
                )
                rewind_to_committed(self.consumer)
            return []
        return ready

    def _check_joined(self) -> None:
        """Raise :class:`NotJoined` once the consumer has gone ``JOIN_DEADLINE_S`` without being
        given partitions since it subscribed or lost its own."""
        since = self._unassigned_since
        if since is not None and self.clock() - since >= JOIN_DEADLINE_S:
            group = self.spec.consumer_group(self.config)
            raise NotJoined(
                f"{self.spec.name}: not given any partition of group {group} for"
                f" {self.clock() - since:.0f} s; ending the process so that a fresh one joins"
            )

    def decode(self, messages: Sequence[Message]) -> tuple[list[Decoded], list[Output]]:
        """The messages of records this stage accepts, and a dead letter for every other one."""
        return decode_or_dead_letter(
            self.config, self.codec, self.spec.name, messages, self.spec.accepts
        )

    def commit(
        self,
        outputs: Iterable[Output] = (),
        offsets: Sequence[TopicPartition] = (),
        *,
        bulk: tuple[str, Sequence[tuple[str | bytes | None, bytes]]] | None = None,
    ) -> None:
        """One transaction: ``bulk`` events (topic, [(key, value)], no delivery callbacks), then
        ``outputs`` in order, then the consumed ``offsets``. On failure: aborted, the stage rewound
        (:meth:`rewind`), the error re-raised."""
        try:
            with self.producer.transaction():
                if bulk is not None:
                    self.producer.produce_all(*bulk)
                for out in outputs:
                    self.producer.produce(
                        out.topic, out.value, out.key, out.partition, out.on_delivery
                    )
                if offsets:
                    assert self.consumer is not None
                    self.producer.send_offsets(self.consumer, offsets)
        except BaseException as exc:
            self.rewind()
            self._rewound_for = exc
            raise

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """A step's work from its first read to its last commit: whatever fails inside, the stage
        is back at what it last committed when the error leaves the block (rewound once)."""
        self._rewound_for = None
        try:
            yield
        except BaseException as exc:
            if exc is not self._rewound_for:
                self.rewind()
            raise
        finally:
            self._rewound_for = None

    def rewind(self) -> None:
        """Back to what was last committed: the consumer at its committed offsets, then the
        stage's ``on_rewind``. Called by :meth:`commit` on failure, and by a stage whose step
        failed before it reached its commit."""
        if self.consumer is not None and self._started:
            rewind_to_committed(self.consumer)
        if self._on_rewind is not None:
            self._on_rewind()

    def close(self) -> None:
        """Leave the group, then flush the producer (an open transaction is left to be fenced)."""
        try:
            if self.consumer is not None:
                self.consumer.close()
        finally:
            self.producer.close()


def _partitions(partitions: Sequence[TopicPartition]) -> str:
    """``topic[0,1,2], other[4]``: partitions named by topic, in one short line."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items()))
