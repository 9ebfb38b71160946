"""The §3b floor: a file's records as the pipeline writes them, and the CPU a file costs in Kafka
and Avro alone, from per-record costs and a run's records per file."""

from __future__ import annotations

import pytest

from bench.hop import EVENTS, READERS, file_records, floor_ms_per_file
from schemas.codec import Codec
from terra_xfer.stages import registry

FLOOR = {"events": {"hop": 20.0, "read": 10.0}, "states": {"hop": 30.0, "read": 15.0, "head": 5.0}}


def test_each_file_gets_its_four_events_or_four_states_of_a_growing_history() -> None:
    codec = Codec()
    events = [codec.decode(v) for _, v in file_records(2, codec, states=False)]
    assert [name for name, _ in events] == [*EVENTS, *EVENTS]
    assert len({value["key"] for _, value in events}) == 2
    states = [codec.decode(v)[1] for _, v in file_records(1, codec, states=True)]
    assert [len(s["history"]) for s in states] == [1, 2, 3, 4]
    assert [s["state"] for s in states] == [h["state"] for h in states[-1]["history"]]


def test_a_file_costs_one_write_of_each_record_and_one_read_per_reader() -> None:
    offsets = {"files.arrived": 1.0, "files.state": 2.0, "producer.checkpoints": 3.0}
    # arrived: written (20 - 10) and read by its 2 readers (2 * 10); each state: written
    # (30 - 15) and read up to its history by the 2 views (2 * 5); checkpoints: no reader.
    expected_us = 1.0 * (10 + 2 * 10) + 2.0 * (15 + 2 * 5)
    assert floor_ms_per_file(FLOOR, offsets) == pytest.approx(expected_us / 1000)


def test_every_topic_the_state_keeper_folds_has_its_readers_counted() -> None:
    # The keeper reads every event topic, so each has at least one reader; files.state is read
    # by the batcher's and the sweeper's views.
    assert all(READERS.get(topic, 0) >= 1 for topic in registry.spec("state-keeper").inputs)
    assert READERS["files.state"] == 2
