"""The step of a stage that maps consumed events to output events: state keeper, deleter.

One step: consume up to ``batch_size`` messages, decode them (dead-lettering what the stage does not
accept), let the handler do its idempotent side effects and return the output events, then commit
outputs and offsets through the one commit path (:class:`terra_xfer.stages.commit.StageKafka`).
A failure anywhere puts the consumer back at its committed offsets and is raised to the host, which
retries transient errors with backoff: the same messages are handled again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import Consumer, TopicPartition

from terra_xfer.config import Config
from terra_xfer.kafka import next_offsets
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.outputs import Decoded, Output
from terra_xfer.stages.spec import StageSpec


class Handler(Protocol):
    def __call__(self, batch: Sequence[Decoded]) -> list[Output]: ...


class TransactionalLoop:
    """Consume the stage's inputs as its group and run ``handler`` transactionally, a batch a step."""

    def __init__(
        self,
        config: Config,
        spec: StageSpec,
        handler: Handler,
        *,
        batch_size: int = 500,
        poll_timeout_s: float = 0.5,
        consumer_overrides: dict[str, Any] | None = None,
        on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        on_commit: Callable[[], None] | None = None,
        on_rewind: Callable[[], None] | None = None,
    ) -> None:
        """``on_commit`` runs after each committed step, and only then: what the step's delivery
        reports told is final once it runs (an aborted step's outputs never reach it).
        ``on_rewind`` runs after each failed step, once the consumer is back at its committed
        offsets."""
        self.kafka = StageKafka(config, spec, consumer_overrides=consumer_overrides)
        self.handler = handler
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self._on_assign = on_assign
        self._on_commit = on_commit
        self._on_rewind = on_rewind

    @property
    def codec(self) -> Any:
        return self.kafka.codec

    @property
    def consumer(self) -> Consumer:
        assert self.kafka.consumer is not None
        return self.kafka.consumer

    def step(self) -> int:
        """Handle one batch; return the number of messages consumed (0 when idle)."""
        self.kafka.start(on_assign=self._on_assign, on_rewind=self._on_rewind)
        with self.kafka.attempt():
            messages = self.kafka.read(self.batch_size, self.poll_timeout_s)
            if not messages:
                return 0
            good, bad = self.kafka.decode(messages)
            outputs = [*bad, *(self.handler(good) if good else [])]
            self.kafka.commit(outputs, next_offsets(messages))
        if self._on_commit is not None:
            self._on_commit()
        return len(messages)

    def close(self) -> None:
        self.kafka.close()
