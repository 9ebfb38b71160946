"""A FileMissing on files.arrived: every stage reading the topic accepts it, the batcher ships nothing
for it (there is no version to ship) and commits past it."""

from __future__ import annotations

from consumers.batcher import Batcher, NoView
from schemas.codec import Codec
from terra_xfer.stages import registry
from terra_xfer.topics import FILES_ARRIVED
from tests.fakes import Clock, offline
from tests.samples import sample
from tests.unit.test_batcher_window_clock import Backend, IdleProducer, Msg, TrickleConsumer


def test_every_stage_reading_files_arrived_accepts_both_of_its_records() -> None:
    readers = [s for s in registry.STAGES if FILES_ARRIVED in s.inputs]
    assert {s.name for s in readers} == {"batcher", "state-keeper"}
    for stage in readers:
        assert {"FileArrived", "FileMissing"} <= stage.accepts, stage.name


def test_the_batcher_skips_a_missing_file_without_a_dead_letter() -> None:
    config = offline()
    clock = Clock(100.0)
    batcher = Batcher(config, registry.spec("batcher"), backend=Backend(), clock=clock)  # type: ignore[arg-type]
    batcher.consumer.close()
    batcher.kafka.producer.close()
    topic = config.topic(FILES_ARRIVED)
    codec = Codec()
    gone = codec.encode("FileMissing", sample("FileMissing"))
    found = codec.encode("FileArrived", sample("FileArrived") | {"key": "ua-mac/other"})
    messages = [Msg(topic, 2, 6, gone), Msg(topic, 2, 7, found), Msg(topic, 3, 4, gone)]
    batcher.kafka.consumer = TrickleConsumer(clock, [])  # type: ignore[assignment]
    batcher.kafka.producer = IdleProducer()  # type: ignore[assignment]

    closed, dead = batcher._window(messages)  # type: ignore[arg-type]

    assert (closed, dead) == ([], [])
    window = batcher.windows._open[2]
    assert [item.key for item in window.items.values()] == ["ua-mac/other"]
    assert (window.first_offset, window.last_offset) == (6, 7)  # committed with the batch
    assert 3 not in batcher.windows._open  # nothing to ship there, only an offset to commit
    assert batcher.windows.idle_commits() == {3: 5}


class CountingView(NoView):
    def __init__(self) -> None:
        self.refreshes = 0

    def refresh(self) -> None:
        self.refreshes += 1


def test_the_batcher_follows_files_state_at_every_step_idle_ones_too() -> None:
    config = offline()
    view = CountingView()
    batcher = Batcher(config, registry.spec("batcher"), backend=Backend(), view=view)  # type: ignore[arg-type]
    batcher.consumer.close()
    batcher.kafka.producer.close()

    assert batcher._window([]) == ([], [])

    assert view.refreshes == 1  # so a restart catches up only the last moments
