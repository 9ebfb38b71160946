"""Batching windows: size cap, time cap, offsets covered, determinism."""

from __future__ import annotations

import pytest

from consumers.batch_windows import BatchItem, Windows


def item(n: int, version: str = "1:1") -> BatchItem:
    return BatchItem(f"site/f{n}", version, f"f{n}", f"d/f{n}", 1, 1)


def test_a_window_closes_at_max_files() -> None:
    w = Windows("t", max_files=3, max_wait_s=30)
    assert w.add(0, 10, item(1), now=0) is None
    assert w.add(0, 11, item(2), now=1) is None
    closed = w.add(0, 12, item(3), now=2)
    assert closed is not None and [f.key for f in closed.files] == ["site/f1", "site/f2", "site/f3"]
    assert (closed.first_offset, closed.last_offset) == (10, 12)
    assert closed.batch_id == "t:0:10-12"
    assert w.open_files == 0


def test_a_partial_window_flushes_after_max_wait() -> None:
    w = Windows("t", max_files=500, max_wait_s=30)
    w.add(1, 0, item(1), now=100)
    w.add(2, 0, item(2), now=110)
    assert w.due(now=129.9) == []
    assert w.seconds_until_due(now=129.9) == pytest.approx(0.1)
    closed = w.due(now=130)
    assert [c.partition for c in closed] == [1]
    assert [c.partition for c in w.due(now=140)] == [2]
    assert w.seconds_until_due(now=140) is None


def test_partitions_have_their_own_windows() -> None:
    w = Windows("t", max_files=2, max_wait_s=30)
    assert w.add(0, 0, item(1), 0) is None
    assert w.add(1, 0, item(2), 0) is None
    assert w.add(0, 1, item(3), 0) is not None
    assert w.open_files == 1


def test_skipped_messages_extend_the_range_and_idle_offsets_are_committed() -> None:
    w = Windows("t", max_files=2, max_wait_s=30)
    w.add(0, 5, None, 0)
    w.add(0, 6, None, 0)
    assert w.idle_commits() == {0: 7}
    assert w.idle_commits() == {}
    w.add(0, 7, None, 0)
    w.add(0, 8, item(1), 0)
    w.add(0, 9, None, 0)
    closed = w.add(0, 10, item(2), 0)
    assert closed is not None and (closed.first_offset, closed.last_offset) == (7, 10)


def test_the_same_version_twice_in_a_window_is_sent_once() -> None:
    w = Windows("t", max_files=2, max_wait_s=30)
    w.add(0, 0, item(1), 0)
    assert w.add(0, 1, item(1), 0) is None
    closed = w.add(0, 2, item(1, version="2:2"), 0)
    assert closed is not None and [f.version for f in closed.files] == ["1:1", "2:2"]


def test_revoked_partitions_are_forgotten() -> None:
    w = Windows("t", max_files=5, max_wait_s=30)
    w.add(0, 0, item(1), 0)
    w.add(3, 0, None, 0)
    w.drop({0, 3})
    assert w.open_files == 0 and w.idle_commits() == {}


def test_max_files_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_files"):
        Windows("t", max_files=0, max_wait_s=1)


def sized(n: int, size: int, version: str = "1:1") -> BatchItem:
    return BatchItem(f"site/f{n}", version, f"f{n}", f"d/f{n}", size, 1)


def test_a_window_closes_once_its_files_hold_max_bytes() -> None:
    """Two 64 GB hyperspectral cubes go as soon as they are there, not after 500 files or 30 s."""
    w = Windows("t", max_files=500, max_wait_s=30, max_bytes=100 * 10**9)
    assert w.add(0, 0, sized(1, 64 * 10**9), now=0) is None
    assert w.add(0, 1, sized(1, 64 * 10**9), now=0) is None  # the same version again: counted once
    closed = w.add(0, 2, sized(2, 64 * 10**9), now=1)
    assert closed is not None and [f.key for f in closed.files] == ["site/f1", "site/f2"]
    assert closed.bytes == 128 * 10**9 and (closed.first_offset, closed.last_offset) == (0, 2)


def test_small_files_still_close_at_max_files_or_max_wait() -> None:
    w = Windows("t", max_files=3, max_wait_s=30, max_bytes=10**10)
    assert [w.add(0, i, sized(i, 1000), now=0) for i in range(2)] == [None, None]
    assert w.add(0, 2, sized(2, 1000), now=0) is not None
    w.add(1, 0, sized(3, 1000), now=0)
    assert [c.partition for c in w.due(now=30)] == [1]


def test_max_bytes_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Windows("t", max_files=5, max_wait_s=1, max_bytes=0)


def test_each_closed_window_says_why_it_closed() -> None:
    w = Windows("t", max_files=2, max_wait_s=30, max_bytes=100)
    w.add(0, 1, sized(1, 1), now=0)
    by_files = w.add(0, 2, sized(2, 1), now=0)
    by_bytes = w.add(1, 1, sized(3, 100), now=0)
    w.add(2, 1, sized(4, 1), now=0)
    w.add(3, 1, sized(5, 1), now=10)
    by_age = w.due(now=30)
    idle = w.close_all()

    assert by_files is not None and by_files.closed_by == "files"
    assert by_bytes is not None and by_bytes.closed_by == "bytes"
    assert [(x.partition, x.closed_by) for x in by_age] == [(2, "waited")]
    assert [(x.partition, x.closed_by) for x in idle] == [(3, "idle")]
    assert w.close_all() == [] and w.open_files == 0
