"""Producers' input positions in the compacted checkpoint topic.

A producer commits its position in the same Kafka transaction as the events made from the input up
to it, so the latest committed checkpoint of a source is exactly where its committed events end.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.reading import read_to_end
from terra_xfer.stages.outputs import Output, now_ms
from terra_xfer.topics import CHECKPOINTS


def last_checkpoint(config: Config, source: str, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """The Checkpoint last committed for ``source`` (``position`` decoded from JSON), or None.

    Call it after the producer's ``init_transactions``, which aborts whatever its previous
    incarnation left open, so the read ends at everything that incarnation committed.
    """
    codec = Codec()
    found: dict[str, Any] | None = None
    for msg in read_to_end(config.kafka, config.topic(CHECKPOINTS), timeout_s):
        key = msg.key()
        if key is not None and key.decode() == source and msg.value():
            _name, value = codec.decode(msg.value() or b"")
            found = value | {"position": json.loads(value["position"])}
    return found


def checkpoint_output(
    config: Config, codec: Codec, source: str, position: dict[str, Any], events: int
) -> Output:
    """The Checkpoint event that records ``position`` for ``source``."""
    value = {
        "source": source,
        "position": json.dumps(position, sort_keys=True),
        "events": events,
        "emitted_ms": now_ms(),
    }
    return Output(config.topic(CHECKPOINTS), source, codec.encode("Checkpoint", value))
