"""The producer's position in the LemnaTec database, and what one poll makes of it (pure).

Snapshot ids grow, but a snapshot is only worth shipping once LemnaTec marks it completed, and a
lower id may complete after a higher one; a lower id may even become visible after a higher one
(its inserting transaction committed later). So the position is ``last_id`` plus ``waiting``: the
ids up to ``last_id`` seen incomplete or not seen at all (a gap between two ids seen), each with
when it started waiting. A poll reads the snapshots after ``last_id`` and the waiting ones; the
completed ones are ready to emit, the others wait. An incomplete one that waits longer than
``give_up_after_ms`` is given up (a dead letter for a person to look at); an absent one is then
forgotten (a sequence number never used, or a deleted row); so the list stays bounded. Gaps wider
than ``MAX_GAP`` (a jump in the sequence, or the first poll of a database with a history) are not
waited for. The position is committed in the same Kafka transaction as the events of the
snapshots it covers, so a restart emits nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from producers.danforth.records import Snapshot

MAX_GAP = 1000


@dataclass(frozen=True)
class Position:
    """Every snapshot id up to ``last_id`` is emitted, given up, or in ``waiting`` (id → ms)."""

    last_id: int = 0
    waiting: Mapping[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_id": self.last_id,
            "waiting": {str(k): v for k, v in sorted(self.waiting.items())},
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Position:
        waiting = {int(k): int(v) for k, v in dict(value.get("waiting") or {}).items()}
        return cls(int(value.get("last_id", 0)), waiting)


@dataclass(frozen=True)
class GivenUp:
    """A snapshot that will not be shipped, and why (a dead letter)."""

    snapshot: Snapshot
    reason: str


@dataclass(frozen=True)
class Plan:
    """What to do after one poll: snapshots to emit and to give up (in id order), and the
    position once both are committed."""

    ready: list[Snapshot]
    given_up: list[GivenUp]
    position: Position

    @property
    def changed(self) -> bool:
        return bool(self.ready or self.given_up)


def plan(
    position: Position,
    newer: Sequence[Snapshot],
    waited: Sequence[Snapshot],
    now_ms: int,
    give_up_after_ms: int,
) -> Plan:
    """The plan for ``newer`` (rows after ``last_id``, in id order) and ``waited`` (the rows of
    the waiting ids that exist now)."""
    waiting = dict(position.waiting)
    ready, given_up = _recheck(waiting, waited, now_ms, give_up_after_ms)
    last_id = position.last_id
    for snapshot in newer:
        if snapshot.id <= last_id:
            continue
        if last_id > 0 and snapshot.id - last_id <= MAX_GAP:
            for absent in range(last_id + 1, snapshot.id):
                waiting[absent] = now_ms
        last_id = snapshot.id
        if snapshot.completed:
            ready.append(snapshot)
        else:
            waiting[snapshot.id] = now_ms
    undated = [s for s in ready if s.time_stamp is None]
    given_up += [GivenUp(s, f"snapshot {s.id} has no time_stamp") for s in undated]
    ready = sorted((s for s in ready if s.time_stamp is not None), key=lambda s: s.id)
    given_up.sort(key=lambda g: g.snapshot.id)
    return Plan(ready, given_up, Position(last_id, waiting))


def _recheck(
    waiting: dict[int, int], waited: Sequence[Snapshot], now_ms: int, give_up_after_ms: int
) -> tuple[list[Snapshot], list[GivenUp]]:
    """Settle the waiting ids (``waiting`` is updated): completed ones are ready, expired
    incomplete ones given up, expired absent ones forgotten (an unused or deleted id)."""
    present = {s.id: s for s in waited}
    ready: list[Snapshot] = []
    given_up: list[GivenUp] = []
    for sid in sorted(waiting):
        waited_ms = now_ms - waiting[sid]
        snapshot = present.get(sid)
        if snapshot is not None and snapshot.completed:
            ready.append(snapshot)
        elif waited_ms < give_up_after_ms:
            continue
        elif snapshot is not None:
            reason = f"snapshot {sid} was not completed within {waited_ms / 1000:.0f} s"
            given_up.append(GivenUp(snapshot, reason))
        del waiting[sid]
    return ready, given_up
