"""The items ingest holds for a retry, and the offsets it may commit while it holds them (pure).

A transferred file whose catalog call failed transiently stays in memory with the time of its next
attempt (exponential backoff with jitter, :class:`RetrySchedule`), while the files consumed after
it go on. Consumed offsets are committed per partition only up to the oldest item still held there
(excluded), as the monitor does for its unfinished batches: a restart reads again from that item,
and the finished items after it are idempotent replays. What is held is forgotten for partitions
that are revoked, and for all of them after a failed transaction; the consumer reads them again.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumers.catalog.base import IngestItem


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff with jitter: ``first_s``, doubling per failed attempt, capped at
    ``max_s``; each delay is drawn between half and all of that, so items that failed together
    do not come back together."""

    first_s: float = 0.5
    max_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1 for the first)."""
        ceiling = min(self.max_s, self.first_s * 2.0 ** min(max(failures, 1) - 1, 32))
        return ceiling * (0.5 + 0.5 * self.rng.random())


@dataclass
class Held:
    """One consumed file that is not finished: where it was read, its event and catalog item,
    and its failed attempts so far (the last cause, to log each cause once)."""

    partition: int
    offset: int
    event: dict[str, Any]
    item: IngestItem
    since: float
    due: float
    failures: int = 0
    cause: str | None = None


class HeldItems:
    """The unfinished items of the partitions a stage reads, and the offsets it may commit."""

    def __init__(self, schedule: RetrySchedule | None = None) -> None:
        self.schedule = schedule or RetrySchedule()
        self._held: dict[tuple[int, int], Held] = {}  # in consumption order per partition
        self._consumed: dict[int, int] = {}  # partition -> highest offset consumed

    def __len__(self) -> int:
        return len(self._held)

    def consumed(self, partition: int, offset: int) -> None:
        """Record a consumed message, whether or not it leaves an item to hold."""
        self._consumed[partition] = max(self._consumed.get(partition, -1), offset)

    def hold(self, held: Held) -> None:
        self._held[(held.partition, held.offset)] = held

    def due(self, now: float, limit: int) -> list[Held]:
        """Up to ``limit`` items whose next attempt is due, the earliest consumed first."""
        found = []
        for held in self._held.values():
            if held.due <= now:
                found.append(held)
                if len(found) >= limit:
                    break
        return found

    def next_due(self) -> float | None:
        """When the next attempt is due (None when nothing is held)."""
        return min((h.due for h in self._held.values()), default=None)

    def finished(self, held: Held) -> None:
        """``held`` has its final answer: its offset no longer holds back the commit."""
        self._held.pop((held.partition, held.offset), None)

    def failed(self, held: Held, now: float, cause: str) -> bool:
        """One more failed attempt of ``held``, due again after the schedule's delay; True when
        ``cause`` differs from its previous one (worth a log line)."""
        new = cause != held.cause
        held.failures += 1
        held.cause = cause
        held.due = now + self.schedule.delay(held.failures)
        return new

    def postpone(self, held: Held, until: float) -> None:
        """No attempt of ``held`` before ``until``; not a failed attempt (nothing was sent)."""
        held.due = max(held.due, until)

    def offsets(self) -> dict[int, int]:
        """Per partition, the offset to commit: after the last consumed message, or at the
        oldest item still held there."""
        commit = {p: o + 1 for p, o in self._consumed.items()}
        for (partition, offset), _held in self._held.items():
            commit[partition] = min(commit.get(partition, offset), offset)
        return commit

    def oldest_since(self) -> float | None:
        """When the longest-held item was consumed (None when nothing is held)."""
        return min((h.since for h in self._held.values()), default=None)

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop what is held and consumed of ``partitions`` (every partition when None)."""
        if partitions is None:
            self._held.clear()
            self._consumed.clear()
            return
        lost = set(partitions)
        self._held = {k: h for k, h in self._held.items() if h.partition not in lost}
        for partition in lost:
            self._consumed.pop(partition, None)
