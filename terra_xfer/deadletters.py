"""Reading the dead-letter topic back: counts by source and reason, for reports."""

from __future__ import annotations

import re
from collections import Counter

from schemas.codec import Codec, CodecError
from terra_xfer.config import Config
from terra_xfer.reading import read_to_end
from terra_xfer.topics import DEADLETTER

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def reason_pattern(reason: str) -> str:
    """A reason without its particulars, so like failures count together and still read as a
    sentence: each quoted value becomes ``'…'`` and each path ``…``, and what follows the first
    colon is dropped (``date 'Apr 31 2016' does not exist`` → ``date '…' does not exist``).
    For people reading ``report``; a metric's label takes the bounded :func:`metrics.reason_class`
    instead, whose few names keep the series count fixed."""
    head = _QUOTED.sub("'…'", reason).split(":")[0]
    return " ".join("…" if "/" in word else word for word in head.split())


def count_dead_letters(config: Config, timeout_s: float = 30.0) -> dict[str, int]:
    """Dead letters so far, as ``{"<source>: <reason class>": count}``."""
    codec = Codec()
    counts: Counter[str] = Counter()
    for msg in read_to_end(config.kafka, config.topic(DEADLETTER), timeout_s):
        try:
            _name, value = codec.decode(msg.value() or b"")
        except CodecError:
            counts["undecodable dead letter"] += 1
            continue
        counts[f"{value['source']}: {reason_pattern(value['reason'])}"] += 1
    return dict(counts)
