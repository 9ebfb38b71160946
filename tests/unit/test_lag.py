"""The lag computation itself, without a broker: per group, from where each group stands, with
offsets on transaction markers."""

from __future__ import annotations

from terra_xfer.lag import (
    GroupLag,
    GroupOffsets,
    PartitionLag,
    Unconsumed,
    answered_by,
    by_group,
    lag_rows,
    partition_lag,
    rounds,
    to_read,
)

NOW = 1_700_000_000_000
HALF_HOUR_MS = 30 * 60 * 1000
T = "terra.files.transferred"


def offsets(group: str, committed: int | None, end: int, low: int = 0, p: int = 0) -> GroupOffsets:
    return GroupOffsets(group, T, p, committed, low, end)


def test_a_group_at_the_end_is_caught_up_without_reading() -> None:
    at_end = offsets("g", 602, 602)
    assert to_read([at_end]) == set()
    assert partition_lag(at_end, None, NOW) == PartitionLag("g", T, 0, 602, 602, 0, 0.0, 0, None)


def test_a_group_on_the_last_commit_marker_is_caught_up() -> None:
    # A stage commits the offset after the last record it read: the transaction's commit marker
    # (601), one before the end. A read_committed read from there reaches the end first.
    on_marker = offsets("g", 601, 602)
    assert to_read([on_marker]) == {(T, 0, 601)}
    row = partition_lag(on_marker, None, NOW)
    assert (row.lag, row.lag_seconds, row.oldest_unconsumed) == (0, 0.0, None)


def test_a_group_behind_counts_from_its_oldest_unconsumed_record_to_the_end() -> None:
    # Committed on the first transaction's marker (100); the second's records are 101-600, its
    # marker 601: 500 records and one marker not consumed.
    behind = offsets("g", 100, 602)
    row = partition_lag(behind, Unconsumed(101, NOW - HALF_HOUR_MS), NOW)
    assert (row.committed, row.end, row.oldest_unconsumed) == (100, 602, 101)
    assert row.lag == 501
    assert row.lag_seconds == HALF_HOUR_MS / 1000


def test_a_record_that_came_after_the_end_was_read_leaves_the_group_caught_up() -> None:
    row = partition_lag(offsets("g", 601, 602), Unconsumed(603, NOW), NOW)
    assert (row.lag, row.lag_seconds) == (0, 0.0)


def test_a_clock_ahead_of_ours_or_a_record_without_timestamp_has_no_age() -> None:
    behind = offsets("g", 10, 20)
    assert partition_lag(behind, Unconsumed(10, NOW + 5000), NOW).lag_seconds == 0.0
    assert partition_lag(behind, Unconsumed(10, -1), NOW).lag_seconds == 0.0
    assert partition_lag(behind, Unconsumed(10, -1), NOW).lag == 10


def test_a_group_without_offsets_or_below_retention_reads_from_the_low_watermark() -> None:
    assert offsets("g", None, 50, low=7).position == 7
    assert offsets("g", 3, 50, low=7).position == 7
    assert offsets("g", 9, 50, low=7).position == 9
    assert offsets("g", None, 0).position == 0
    assert to_read([offsets("g", None, 0)]) == set()  # an empty partition


def test_groups_on_one_partition_each_get_the_answer_for_their_own_position() -> None:
    # files.transferred[0]: ingest 500 records behind, the deleter and the state keeper caught up
    # on the marker. Whichever order they come in, nobody takes another's answer.
    ingest, deleter = offsets("ingest", 100, 602), offsets("deleter", 601, 602)
    keeper = offsets("state-keeper", 601, 602)
    first = {(T, 0, 100): Unconsumed(101, NOW - HALF_HOUR_MS), (T, 0, 601): None}
    for order in ([ingest, deleter, keeper], [deleter, keeper, ingest], [keeper, ingest, deleter]):
        rows = {r.group: r for r in lag_rows(order, first, NOW)}
        assert (rows["ingest"].lag, rows["ingest"].lag_seconds) == (501, HALF_HOUR_MS / 1000)
        assert (rows["deleter"].lag, rows["deleter"].lag_seconds) == (0, 0.0)
        assert (rows["state-keeper"].lag, rows["state-keeper"].lag_seconds) == (0, 0.0)


def test_the_same_position_on_another_partition_is_another_read() -> None:
    a, b = offsets("a", 5, 10, p=0), offsets("b", 5, 10, p=1)
    assert to_read([a, b]) == {(T, 0, 5), (T, 1, 5)}
    rows = lag_rows([a, b], {(T, 0, 5): Unconsumed(6, NOW), (T, 1, 5): None}, NOW)
    assert [r.lag for r in rows] == [4, 0]


def test_reads_of_one_partition_from_several_places_go_lowest_first_one_per_round() -> None:
    starts = {(T, 0, 601), (T, 0, 100), (T, 1, 40), (T, 0, 350), ("other", 0, 9)}
    assert rounds(starts) == [
        {(T, 0): 100, (T, 1): 40, ("other", 0): 9},
        {(T, 0): 350},
        {(T, 0): 601},
    ]
    assert rounds([]) == []


def test_an_earlier_read_answers_a_higher_position_only_when_nothing_lies_between() -> None:
    found: dict[tuple[str, int, int], Unconsumed | None] = {(T, 0, 100): Unconsumed(101, NOW)}
    # The first record from 100 is 101: from 101 it is the same record, from 102 it is unknown.
    assert answered_by((T, 0, 101), found) == (True, Unconsumed(101, NOW))
    assert answered_by((T, 0, 102), found) == (False, None)
    # Nothing before the end from 100: nothing from anywhere after it either.
    assert answered_by((T, 0, 601), {(T, 0, 100): None}) == (True, None)
    # A read of another partition, or from a higher position, says nothing.
    assert answered_by((T, 1, 101), found) == (False, None)
    assert answered_by((T, 0, 50), found) == (False, None)


def test_per_group_the_messages_add_up_and_the_age_is_the_oldest() -> None:
    rows = [
        PartitionLag("ingest", T, 0, 100, 602, 501, 1800.0),
        PartitionLag("ingest", T, 1, 9, 12, 3, 4.0),
        PartitionLag("deleter", T, 0, 601, 602, 0, 0.0),
    ]
    assert by_group(rows) == {"ingest": GroupLag(504, 1800.0), "deleter": GroupLag(0, 0.0)}
    assert by_group([]) == {}
