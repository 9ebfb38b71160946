"""The transactional consume-process-produce loop every Kafka-to-Kafka stage runs.

One step: consume up to ``batch_size`` messages, let the stage handle them (doing its idempotent side
effects and returning output events), then in ONE transaction produce the outputs and commit the
consumed offsets. The order is fixed here and nowhere else: side effect → events → offsets. If anything
fails, the transaction is aborted and the consumer rewound to its last committed offsets, so the same
messages are handled again on the next step.

Messages that cannot be decoded are not the stage's problem: :func:`decode_or_dead_letter` turns them
into DeadLetter outputs, so a poison message is recorded once with its reason and skipped, never
retried for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, Message

from schemas.codec import Codec, CodecError
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import (
    TxProducer,
    check,
    consume_ready,
    instance_id,
    member_consumer,
    next_offsets,
    rewind_to_committed,
    where,
)
from terra_xfer.topics import DEADLETTER

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Output:
    """One event to produce in the step's transaction."""

    topic: str
    key: str | bytes | None
    value: bytes | None
    partition: int | None = None
    on_delivery: Callable[[Message], None] | None = None


@dataclass(frozen=True)
class Decoded:
    """A consumed message with its decoded value."""

    msg: Message
    record: str
    value: dict[str, Any]


class Handler(Protocol):
    def __call__(self, batch: Sequence[Decoded]) -> list[Output]: ...


def now_ms() -> int:
    return int(time.time() * 1000)


def dead_letter(config: Config, codec: Codec, source: str, reason: str, msg: Message) -> Output:
    """A DeadLetter output for a consumed message that cannot be processed."""
    metrics.count_dead_letter(source, reason)
    raw = msg.value() or b""
    key = msg.key()
    value = {
        "source": source,
        "reason": reason,
        "raw": raw,
        "origin": msg.topic() or "",
        "offset": msg.offset(),
        "partition": msg.partition(),
        "key": key.decode("utf-8", "backslashreplace") if key else None,
        "emitted_ms": now_ms(),
    }
    return Output(config.topic(DEADLETTER), source, codec.encode("DeadLetter", value))


def decode_or_dead_letter(
    config: Config, codec: Codec, source: str, messages: Sequence[Message], accept: frozenset[str]
) -> tuple[list[Decoded], list[Output]]:
    """Decode ``messages``; the undecodable or unexpected ones become DeadLetter outputs."""
    good: list[Decoded] = []
    bad: list[Output] = []
    for msg in messages:
        raw = msg.value()
        if raw is None:
            continue  # tombstones carry no event
        try:
            record, value = codec.decode(raw)
        except CodecError as exc:
            log.warning("%s: dead-lettered: %s", where(msg), exc)
            bad.append(dead_letter(config, codec, source, str(exc), msg))
            continue
        if record not in accept:
            reason = f"{record} is not an event {source} expects on {msg.topic()}"
            bad.append(dead_letter(config, codec, source, reason, msg))
            continue
        good.append(Decoded(msg, record, value))
    return good, bad


class TransactionalLoop:
    """Consume ``topics`` as ``group_id`` and run ``handler`` transactionally, one batch per step."""

    def __init__(
        self,
        config: Config,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        accept: frozenset[str],
        *,
        batch_size: int = 500,
        poll_timeout_s: float = 0.5,
        consumer_overrides: dict[str, Any] | None = None,
        on_assign: Callable[[Consumer, list[Any]], None] | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        """``on_commit`` runs after each committed step, and only then: what the step's delivery
        reports told is final once it runs (an aborted step's outputs never reach it)."""
        self.config = config
        self.group_id = group_id
        self.topics = list(topics)
        self.handler = handler
        self.accept = accept
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.codec = Codec()
        self.consumer = member_consumer(config.kafka, config.group(group_id), consumer_overrides)
        self.producer = TxProducer(config.kafka, f"{config.group(group_id)}-{instance_id()}")
        self._on_assign = on_assign
        self._on_commit = on_commit
        self._subscribed = False
        self._failures = 0
        self._retry_at = 0.0

    def _subscribe(self) -> None:
        if not self._subscribed:
            self.producer.init()
            kwargs: dict[str, Any] = {}
            if self._on_assign is not None:
                kwargs["on_assign"] = self._on_assign
            self.consumer.subscribe(self.topics, **kwargs)
            self._subscribed = True

    def step(self) -> int:
        """Handle one batch; return the number of messages consumed (0 when idle)."""
        self._subscribe()
        if time.monotonic() < self._retry_at:
            return 0  # backing off after a transient failure (well within max.poll.interval.ms)
        raw = consume_ready(self.consumer, self.batch_size, self.poll_timeout_s)
        messages = [m for m in raw if check(m) is not None]
        if not messages:
            return 0
        try:
            with self.producer.transaction():
                good, bad = decode_or_dead_letter(
                    self.config, self.codec, self.group_id, messages, self.accept
                )
                outputs = [*bad, *(self.handler(good) if good else [])]
                for out in outputs:
                    self.producer.produce(
                        out.topic, out.value, out.key, out.partition, out.on_delivery
                    )
                self.producer.send_offsets(self.consumer, next_offsets(messages))
        except TransientError as exc:
            self._failures += 1
            delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            log.warning(
                "%s: batch of %d aborted, retrying in %.1f s: %s",
                self.group_id,
                len(messages),
                delay,
                exc,
            )
            rewind_to_committed(self.consumer)
            return 0
        except BaseException:
            rewind_to_committed(self.consumer)
            raise
        self._failures = 0
        if self._on_commit is not None:
            self._on_commit()
        return len(messages)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.close()


TRANSFER_OUTCOMES = frozenset({"FileTransferred", "FileTransferFailed"})


def transferred_loop(
    config: Config, stage: str, handler: Handler, batch_size: int = 200
) -> TransactionalLoop:
    """The loop of a stage that reacts to transfer outcomes (ingest, deleter)."""
    from terra_xfer.topics import FILES_TRANSFERRED

    return TransactionalLoop(
        config,
        stage,
        [config.topic(FILES_TRANSFERRED)],
        handler,
        TRANSFER_OUTCOMES,
        batch_size=batch_size,
    )
