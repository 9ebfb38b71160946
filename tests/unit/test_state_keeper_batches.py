"""The state keeper folds a consumed batch at once and keeps committed states in memory.

No broker: the keeper's handler is called directly, delivery reports are played by hand, and
the commit (or its absence, for an aborted transaction) is the keeper's ``_on_commit`` hook.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from consumers.state.fold import batched, fold
from consumers.state.keeper import KeptStates, StateKeeper
from consumers.state.keeper_store import KeeperStore
from consumers.state.status_index import StatusIndexBusyError
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.partitioner import partition_of
from terra_xfer.stages import registry
from terra_xfer.stages.outputs import Decoded, Output
from terra_xfer.topics import DEADLETTER, FILES_STATE
from tests.samples import KEY, MS, VERSION, sample

CODEC = Codec()
NEWER = "8147712:1503578499000000000"


class Msg:
    """The parts of a confluent_kafka Message the keeper reads."""

    def __init__(self, partition: int = 0, offset: int = 0, topic: str = "t") -> None:
        self._partition, self._offset, self._topic = partition, offset, topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return b"raw"

    def key(self) -> bytes | None:
        return None


def event(record: str, **over: Any) -> Decoded:
    return Decoded(Msg(), record, sample(record) | over)  # type: ignore[arg-type]


def batch_of(phase: str, task_id: str | None, *versions: str) -> Decoded:
    value = sample("BatchSubmitted") | {"phase": phase, "task_id": task_id}
    base = value["files"][0]
    value["files"] = [base | {"version": v} for v in versions]
    return Decoded(Msg(), "BatchSubmitted", value)  # type: ignore[arg-type]


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[StateKeeper]:
    base = Config()
    config = dataclasses.replace(
        base,
        kafka=dataclasses.replace(base.kafka, bootstrap_servers="127.0.0.1:9"),
        status=dataclasses.replace(
            base.status, index_path=tmp_path / "status.sqlite", keeper_path=tmp_path / "k.sqlite"
        ),
    )
    k = StateKeeper(config, registry.spec("state-keeper"))
    # As if started: its topics checked (one partition, where every Msg says it was read, so
    # the keeper owns every key) and its copy caught up before it joined and at its first
    # assignment.
    k.partitions = 1
    k._joined = True
    k._stale = False
    yield k
    k.close()


def states(outputs: Sequence[Output]) -> dict[str, dict[str, Any]]:
    return {str(o.key): CODEC.decode(o.value or b"")[1] for o in outputs}


def commit(keeper: StateKeeper, outputs: Sequence[Output], first_offset: int = 0) -> None:
    """What a committed transaction does: every output is reported delivered, then committed."""
    for i, out in enumerate(outputs):
        assert out.on_delivery is not None
        out.on_delivery(Msg(0, first_offset + i))  # type: ignore[arg-type]
    keeper._on_commit()


def test_several_changes_to_one_key_in_a_batch_fold_to_the_final_state(
    keeper: StateKeeper,
) -> None:
    arrived, transferred = event("FileArrived"), event("FileTransferred")
    prepared, submitted = batch_of("PREPARED", None, VERSION), batch_of("SUBMITTED", "t-1", VERSION)
    outputs = keeper._handle([arrived, prepared, submitted, transferred])

    assert len(outputs) == 1  # one state per key and batch
    final = states(outputs)[KEY]
    now = final["updated_ms"]
    expected = fold(None, "FileArrived", arrived.value, now)
    for b in (prepared, submitted):
        f = b.value["files"][0]
        expected = batched(expected, f, b.value["batch_id"], b.value["task_id"], now, emitted_ms=MS)
    expected = fold(expected, "FileTransferred", transferred.value, now)
    assert final == expected
    assert [t["state"] for t in final["history"]] == [
        "ARRIVED",
        "BATCHED",
        "BATCHED",
        "TRANSFERRED",
    ]


def test_two_versions_of_one_key_in_one_batch_leave_the_newer(keeper: StateKeeper) -> None:
    outputs = keeper._handle([batch_of("SUBMITTED", "t-1", VERSION, NEWER)])

    final = states(outputs)[KEY]
    assert (final["version"], final["state"], final["task_id"]) == (NEWER, "BATCHED", "t-1")
    assert final["previous_versions"] == [VERSION]


def test_the_next_batch_folds_onto_committed_states_not_yet_in_the_copy(
    keeper: StateKeeper,
) -> None:
    commit(keeper, keeper._handle([event("FileArrived")]))
    assert keeper.copy.store.get(KEY) is None  # waiting in memory, not written yet

    later = states(keeper._handle([event("FileTransferred")]))[KEY]

    assert [t["state"] for t in later["history"]] == ["ARRIVED", "TRANSFERRED"]


def test_an_aborted_step_leaves_no_trace(keeper: StateKeeper) -> None:
    commit(keeper, keeper._handle([event("FileArrived")]))
    keeper.kept.flush()
    before = keeper.copy.store.get(KEY)

    outputs = keeper._handle([event("FileTransferred")])
    for i, out in enumerate(outputs):  # delivered inside the transaction, which then aborts
        assert out.on_delivery is not None
        out.on_delivery(Msg(0, 10 + i))  # type: ignore[arg-type]
    keeper._written, keeper._produced = [], 0  # the next step starts afresh, with no commit

    assert keeper.kept.lookup([KEY]) == {KEY: before}
    assert keeper.kept.flush() == 0
    assert keeper.copy.store.get(KEY) == before
    retried = states(keeper._handle([event("FileTransferred")]))[KEY]
    assert retried["state"] == "TRANSFERRED"  # the retry folds it again: nothing was lost


def test_committed_states_reach_the_copy_with_their_offsets(keeper: StateKeeper) -> None:
    outputs = keeper._handle([event("FileArrived")])
    commit(keeper, outputs, first_offset=41)
    commit(keeper, keeper._handle([event("FileTransferred")]), first_offset=42)

    assert keeper.kept.flush() == 1  # the key's latest state only
    assert keeper.copy.store.get(KEY) == keeper.kept.lookup([KEY])[KEY]
    assert keeper.copy.store.get(KEY)["state"] == "TRANSFERRED"  # type: ignore[index]
    assert keeper.copy.store.offsets() == {0: 43}
    assert keeper.states_written == 2


def test_a_missing_delivery_report_makes_the_keeper_read_the_topic(
    keeper: StateKeeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    caught_up: list[bool] = []
    monkeypatch.setattr(keeper.copy, "catch_up", lambda: caught_up.append(True))
    commit(keeper, keeper._handle([event("FileArrived")]))
    keeper._handle([event("FileTransferred")])
    keeper._on_commit()  # committed, but no report came for the state
    keeper._handle([event("FileIngested")])  # the next fold

    assert caught_up == [True]  # read before that fold
    assert keeper.kept.recent == {}  # memory forgotten; the copy is read afresh


def test_an_assignment_flushes_forgets_and_catches_up_before_its_first_fold(
    keeper: StateKeeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    caught_up: list[bool] = []
    monkeypatch.setattr(keeper.copy, "catch_up", lambda: caught_up.append(True))
    commit(keeper, keeper._handle([event("FileArrived")]))

    keeper._on_assign(None, [])  # type: ignore[arg-type]

    assert keeper.kept.recent == {} and keeper.kept.pending == {}
    assert keeper.copy.store.get(KEY) is not None
    # Not yet: the previous owner's last transaction may still be open until the assignment's
    # first messages (fetched stable) are in hand.
    assert caught_up == []
    keeper._handle([event("FileTransferred")])
    assert caught_up == [True]


def record(
    key: str, offset: int, state: str = "ARRIVED"
) -> tuple[int, int, str, dict[str, Any], bytes]:
    path = key.partition("/")[2]
    value = sample("FileState") | {"key": key, "path": path, "state": state}
    return 0, offset, key, value, Codec().encode("FileState", value)


def test_a_failed_flush_keeps_every_pending_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with KeeperStore(tmp_path / "k.sqlite") as store:
        kept = KeptStates(store)
        kept.committed([record("ua-mac/a", 0), record("ua-mac/b", 1)])
        real = store.apply

        def busy(records: Any) -> int:
            raise StatusIndexBusyError("locked")

        monkeypatch.setattr(store, "apply", busy)
        with pytest.raises(StatusIndexBusyError):
            kept.flush()
        monkeypatch.setattr(store, "apply", real)

        assert kept.flush() == 2
        assert store.offsets() == {0: 2}
        assert store.get("ua-mac/b") is not None


def test_flush_is_due_by_count_or_by_age(tmp_path: Path) -> None:
    now = [0.0]
    with KeeperStore(tmp_path / "k.sqlite") as store:
        kept = KeptStates(store, flush_records=3, flush_s=1.0, clock=lambda: now[0])
        assert not kept.due()
        kept.committed([record("ua-mac/a", 0)])
        assert not kept.due()
        now[0] = 1.0
        assert kept.due()
        kept.flush()
        kept.committed([record(f"ua-mac/{n}", i) for i, n in enumerate("xyz", start=1)])
        assert kept.due()


def test_old_states_leave_memory_after_a_flush_and_are_read_from_the_copy(
    tmp_path: Path,
) -> None:
    with KeeperStore(tmp_path / "k.sqlite") as store:
        kept = KeptStates(store, keep=2)
        kept.committed([record("ua-mac/a", 0), record("ua-mac/b", 1), record("ua-mac/c", 2)])
        kept.committed([record("ua-mac/a", 3, "BATCHED")])  # a is now the latest write
        kept.flush()

        assert list(kept.recent) == ["ua-mac/c", "ua-mac/a"]
        found = kept.lookup(["ua-mac/a", "ua-mac/b", "ua-mac/nothing"])
        assert found["ua-mac/b"] == record("ua-mac/b", 1)[3]  # from the copy
        assert found["ua-mac/a"]["state"] == "BATCHED"
        assert "ua-mac/nothing" not in found


def test_an_event_of_a_file_another_partition_owns_is_dead_lettered_not_folded(
    keeper: StateKeeper,
) -> None:
    keeper.partitions = 6
    owner = partition_of(KEY, 6)
    elsewhere = (owner + 1) % 6
    value = sample("FileArrived")
    stray = Decoded(Msg(partition=elsewhere), "FileArrived", value)  # type: ignore[arg-type]
    mine = Decoded(Msg(partition=owner), "FileArrived", value)  # type: ignore[arg-type]

    refused = keeper._handle([stray])
    assert [o.topic for o in refused] == [keeper.config.topic(DEADLETTER)]
    letter = CODEC.decode(refused[0].value or b"")[1]
    assert f"owned by another partition (e.g. {KEY!r} is on {owner})" in letter["reason"]
    assert keeper.kept.lookup([KEY]) == {}

    folded = keeper._handle([mine])
    assert [o.topic for o in folded] == [keeper.config.topic(FILES_STATE)]


def test_a_batch_naming_any_file_of_another_partition_is_refused_whole(
    keeper: StateKeeper,
) -> None:
    keeper.partitions = 6
    value = sample("BatchSubmitted")
    here = partition_of(value["files"][0]["key"], 6)
    other = next(
        f"ua-mac/x/{i}.bin" for i in range(100) if partition_of(f"ua-mac/x/{i}.bin", 6) != here
    )
    value["files"] = [value["files"][0], value["files"][0] | {"key": other}]
    outputs = keeper._handle([Decoded(Msg(partition=here), "BatchSubmitted", value)])  # type: ignore[arg-type]
    assert [o.topic for o in outputs] == [keeper.config.topic(DEADLETTER)]


def test_an_event_that_cannot_be_folded_is_a_dead_letter(keeper: StateKeeper) -> None:
    outputs = keeper._handle([event("FileArrived", version="not-a-version")])
    assert [o.topic for o in outputs] == [keeper.config.topic(DEADLETTER)]
    assert "malformed version" in CODEC.decode(outputs[0].value or b"")[1]["reason"]


def test_a_keeper_catches_up_before_it_joins_and_again_while_idle_once_given_partitions(
    keeper: StateKeeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    caught_up: list[bool] = []
    calls: list[str] = []

    def poll() -> int:
        calls.append("poll")  # the loop's first poll joins the group
        return 0  # nothing to consume yet

    def catch_up() -> None:
        caught_up.append(True)
        calls.append("catch-up")

    monkeypatch.setattr(keeper.copy, "catch_up", catch_up)
    monkeypatch.setattr(keeper.copy, "settle", lambda partitions: None)
    monkeypatch.setattr(keeper.loop, "step", poll)
    assigned: list[TopicPartition] = []
    monkeypatch.setattr(keeper.loop.kafka, "consumer", SimpleNamespace(assignment=lambda: assigned))
    keeper._on_assign(None, [])  # type: ignore[arg-type]
    keeper._joined = False  # as it starts

    keeper.step()
    # Before it joins the group (its first poll is in the loop's step): the copy's warm-up,
    # while the other replicas still fold every partition.
    assert calls == ["catch-up", "poll"]
    keeper.step()
    assert caught_up == [True]  # not in the group yet: nothing more to catch up for

    assigned.append(TopicPartition("t", 0))
    keeper.step()
    keeper.step()
    assert caught_up == [True, True]  # once, then not again until the next assignment
