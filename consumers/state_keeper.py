"""The state keeper: the only writer of files.state, folding every file event into its FileState.

It consumes every event topic as one consumer group with the *range* assignor, which hands each
instance the same partition numbers of every topic: with co-partitioned topics (checked at start)
one instance sees all events of the files it owns, so there are no lost updates between instances.

Its working copy of files.state is an on-disk StatusIndex. New states are written to Kafka in the
same transaction as the consumed offsets, and to the working copy after the commit, with the
offsets Kafka gave them; after a crash in between, the copy catches up from the topic itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from consumers.state_fold import batched, fold
from consumers.state_view import StateFollower
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError
from terra_xfer.stage import Decoded, Output, TransactionalLoop, now_ms
from terra_xfer.topics import (
    BATCHES_SUBMITTED,
    FILES_ARRIVED,
    FILES_DELETED,
    FILES_INGESTED,
    FILES_STATE,
    FILES_TRANSFERRED,
)

log = logging.getLogger(__name__)
GROUP = "state-keeper"
INPUTS = (FILES_ARRIVED, BATCHES_SUBMITTED, FILES_TRANSFERRED, FILES_INGESTED, FILES_DELETED)
RECORDS = frozenset(
    {
        "FileArrived",
        "BatchSubmitted",
        "FileTransferred",
        "FileTransferFailed",
        "FileIngested",
        "FileIngestFailed",
        "FileDeleted",
    }
)


class StateKeeper:
    """One state keeper instance."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = StateFollower(config, config.status.keeper_path)
        self.loop = TransactionalLoop(
            config,
            GROUP,
            [config.topic(t) for t in INPUTS],
            self._handle,
            RECORDS,
            batch_size=2000,
            consumer_overrides={"partition.assignment.strategy": "range"},
            on_assign=self._on_assign,
        )
        self._checked = False
        self._written: list[tuple[int, int, str, dict[str, Any]]] = []
        self.states_written = 0

    def _check_partitions(self) -> None:
        if self._checked:
            return
        names = [self.config.topic(t) for t in (*INPUTS, FILES_STATE)]
        meta = self.loop.consumer.list_topics(timeout=30)
        counts = {n: len(meta.topics[n].partitions) for n in names if n in meta.topics}
        missing = [n for n in names if n not in counts]
        if missing:
            raise PermanentError(
                f"topics missing: {', '.join(missing)} (run terra-xfer topics create)"
            )
        if len(set(counts.values())) != 1:
            raise PermanentError(f"the state keeper needs co-partitioned topics; found {counts}")
        self._checked = True

    def _on_assign(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self.store.catch_up()

    def step(self) -> int:
        self._check_partitions()
        self._written = []
        handled = self.loop.step()
        if self._written:
            self.store.index.apply(self._written)
            self.states_written += len(self._written)
        return handled

    def _handle(self, batch: Sequence[Decoded]) -> list[Output]:
        now = now_ms()
        changed: dict[str, dict[str, Any]] = {}

        def current(key: str) -> dict[str, Any] | None:
            return changed.get(key) or self.store.get(key)

        for d in batch:
            try:
                if d.record == "BatchSubmitted":
                    for f in d.value["files"]:
                        new = batched(
                            current(f["key"]),
                            f,
                            d.value["batch_id"],
                            d.value.get("task_id"),
                            now,
                            emitted_ms=d.value["emitted_ms"],
                        )
                        if new is not None:
                            changed[f["key"]] = new
                    continue
                new = fold(current(d.value["key"]), d.record, d.value, now)
            except PermanentError as exc:
                log.error("%s: cannot fold %s: %s", d.msg.topic(), d.record, exc)
                continue
            if new is not None:
                changed[d.value["key"]] = new
        topic = self.config.topic(FILES_STATE)
        return [
            Output(
                topic,
                key,
                self.loop.codec.encode("FileState", state),
                on_delivery=self._delivered(key, state),
            )
            for key, state in changed.items()
        ]

    def _delivered(self, key: str, state: dict[str, Any]) -> Any:
        def record(msg: Message) -> None:
            p, o = msg.partition(), msg.offset()
            assert p is not None and o is not None
            self._written.append((p, o, key, state))

        return record

    def close(self) -> None:
        try:
            self.loop.close()
        finally:
            self.store.close()
