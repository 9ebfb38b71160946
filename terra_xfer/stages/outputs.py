"""What a stage's step reads and writes: decoded inputs, output events, dead letters.

A message that cannot be decoded, or carries a record its stage does not accept, is not the
stage's problem: :func:`decode_or_dead_letter` turns it into a DeadLetter output, so a poison
message is recorded once with its reason and skipped, never retried for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from schemas.codec import Codec, CodecError
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.kafka import where
from terra_xfer.topics import DEADLETTER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """One event to produce in a step's transaction."""

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
