"""Files held for a retry: the backoff with jitter, and offsets held back at the oldest one."""

from __future__ import annotations

import random

from consumers.catalog.base import IngestItem
from consumers.ingest_retries import Held, HeldItems, RetrySchedule

ITEM = IngestItem("k", "d", ("c",), "/f", "f", 1, None, False)


def held(partition: int, offset: int, due: float = 0.0) -> Held:
    return Held(partition, offset, {"key": f"{partition}@{offset}"}, ITEM, since=0.0, due=due)


def test_the_delay_doubles_per_failure_up_to_the_cap_with_jitter_below_it() -> None:
    schedule = RetrySchedule(first_s=0.5, max_s=8.0, rng=random.Random(3))
    for failures, ceiling in [
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
        (5, 8.0),
        (9, 8.0),
        (99, 8.0),
    ]:
        delays = [schedule.delay(failures) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), failures
        assert max(delays) - min(delays) > ceiling / 4  # spread out, not in lockstep


def test_the_jitter_is_reproducible_from_its_seed() -> None:
    one = RetrySchedule(rng=random.Random(7))
    two = RetrySchedule(rng=random.Random(7))
    assert [one.delay(n) for n in range(1, 8)] == [two.delay(n) for n in range(1, 8)]


def test_offsets_stop_at_the_oldest_held_item_of_each_partition() -> None:
    items = HeldItems()
    for offset in range(5):
        items.consumed(0, offset)
    for offset in (10, 11):
        items.consumed(1, offset)
    items.consumed(2, 3)
    items.hold(held(0, 2))
    items.hold(held(0, 4))
    items.hold(held(1, 11))

    assert items.offsets() == {0: 2, 1: 11, 2: 4}

    items.finished(held(0, 2))
    assert items.offsets() == {0: 4, 1: 11, 2: 4}
    items.finished(held(0, 4))
    items.finished(held(1, 11))
    assert items.offsets() == {0: 5, 1: 12, 2: 4}
    assert len(items) == 0


def test_due_items_come_earliest_consumed_first_up_to_the_limit() -> None:
    items = HeldItems()
    for h in (held(0, 1, due=5.0), held(0, 2), held(1, 7), held(0, 3)):
        items.hold(h)

    assert [(h.partition, h.offset) for h in items.due(1.0, 10)] == [(0, 2), (1, 7), (0, 3)]
    assert [(h.partition, h.offset) for h in items.due(1.0, 2)] == [(0, 2), (1, 7)]
    assert [h.offset for h in items.due(5.0, 10)] == [1, 2, 7, 3]
    assert items.next_due() == 0.0


def test_a_failure_schedules_the_next_attempt_and_tells_a_new_cause() -> None:
    items = HeldItems(RetrySchedule(first_s=2.0, max_s=60.0, rng=random.Random(1)))
    h = held(0, 1)
    items.hold(h)

    assert items.failed(h, 100.0, "502") is True
    assert 101.0 <= h.due <= 102.0 and h.failures == 1
    assert items.due(100.5, 10) == []
    assert items.failed(h, 102.0, "502") is False
    assert 104.0 <= h.due <= 106.0
    assert items.failed(h, 106.0, "reset") is True
    assert h.failures == 3


def test_revoked_partitions_are_forgotten_and_a_rewind_forgets_everything() -> None:
    items = HeldItems()
    for partition in (0, 1):
        items.consumed(partition, 4)
        items.hold(held(partition, 3))

    items.forget([1])
    assert items.offsets() == {0: 3} and len(items) == 1

    items.forget()
    assert items.offsets() == {} and len(items) == 0 and items.oldest_since() is None
