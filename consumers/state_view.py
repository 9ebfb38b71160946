"""Following the compacted files.state topic into an on-disk StatusIndex.

The index stores, with its rows, the next offset of each partition it has applied, so following is
incremental: a new process opens the index and reads only what was written since. A missing index
file is simply rebuilt from the beginning of the topic (compaction keeps it small).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from consumers.state_fold import is_transferred
from consumers.status_index import StatusIndex
from schemas.codec import Codec, CodecError
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import make_consumer
from terra_xfer.topics import FILES_STATE


class StateFollower:
    """A read-only view of files.state, kept current by :meth:`refresh` / :meth:`catch_up`."""

    def __init__(self, config: Config, index_path: Path) -> None:
        self.config = config
        self.topic = config.topic(FILES_STATE)
        self.index = StatusIndex(index_path)
        self.codec = Codec()
        self._consumer: Any = None
        self._partitions: list[int] = []

    def _assign(self, again: bool = False) -> None:
        """Assign every partition at the index's offsets (``again``: re-assign, which makes the
        consumer report the end of each partition anew)."""
        if self._consumer is not None and not again:
            return
        if self._consumer is None:
            self._consumer = make_consumer(
                self.config.kafka,
                f"terra-xfer-state-view-{uuid.uuid4().hex[:8]}",
                {"enable.partition.eof": True},
            )
            meta = self._consumer.list_topics(self.topic, timeout=30)
            self._partitions = sorted(meta.topics[self.topic].partitions)
        stored = self.index.offsets()
        self._consumer.assign(
            [
                TopicPartition(self.topic, p, stored.get(p, OFFSET_BEGINNING))
                for p in self._partitions
            ]
        )

    def refresh(self, max_messages: int = 10_000, timeout_s: float = 0.0) -> int:
        """Apply what is available now (up to ``max_messages``); return how many were applied."""
        self._assign()
        messages = self._consumer.consume(max_messages, timeout_s)
        records = []
        for msg in messages:
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise TransientError(f"reading {self.topic}: {msg.error().str()}")
            key = (msg.key() or b"").decode("utf-8", "backslashreplace")
            value = None
            if msg.value() is not None:
                try:
                    _name, value = self.codec.decode(msg.value())
                except CodecError:
                    continue  # the state keeper is the only writer; nothing else belongs here
            records.append((msg.partition(), msg.offset(), key, value))
        return self.index.apply(records) if records else 0

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """Apply everything committed up to now: each partition is read until the consumer reports
        its end once (with read_committed, the last stable offset). Records arriving after that
        are applied when they come in the same read, but an end that moves on is not chased: under
        a steady stream of state changes it would never be reached everywhere at once."""
        self._assign(again=True)
        applied = 0
        remaining = set(self._partitions)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TransientError(f"catching up with {self.topic} timed out")
            messages = self._consumer.consume(10_000, 0.5)
            batch = []
            for msg in messages:
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                elif err is not None:
                    raise TransientError(f"reading {self.topic}: {err.str()}")
                else:
                    key = (msg.key() or b"").decode("utf-8", "backslashreplace")
                    value = self.codec.decode(msg.value())[1] if msg.value() is not None else None
                    batch.append((msg.partition(), msg.offset(), key, value))
            applied += self.index.apply(batch) if batch else 0
        return applied

    def get(self, key: str) -> dict[str, Any] | None:
        return self.index.get(key)

    def transferred(self, key: str, version: str) -> bool:
        return is_transferred(self.index.get(key), version)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self.index.close()
