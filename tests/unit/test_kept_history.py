"""A FileState read back with its history kept as bytes (``Codec.decode_keeping``): it equals the
state a full decode reads, it is written again byte for byte, a transition added to it is written
as a list's would be, and none of this decodes the history. Records it cannot split (another
schema version, an array in several blocks) are decoded whole; broken ones are corrupt events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from consumers.state import fold as fold_module
from consumers.state.fold import HISTORY_LIMIT, fold
from consumers.state.keeper_store import KeeperStore
from schemas.codec import Codec, CorruptEventError, _Keeping, current_schemas
from schemas.head_reader import compile_head_reader
from schemas.writer import EncodedItems, Remembered
from tests.samples import sample
from tests.unit.test_writer import values_of

FILE_STATE = current_schemas()["FileState"].parsed
FIELD = "history"


def transition(n: int) -> dict[str, Any]:
    return {"state": "BATCHED", "at_ms": 1_700_000_000_000 + n, "evidence": {"batch_id": f"b{n}"}}


def undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any look into a kept history fail the test."""

    def refused(self: _Keeping, whole: bytes) -> list[Any]:
        raise AssertionError("the kept history was decoded")

    monkeypatch.setattr(_Keeping, "decode_items", refused)


@settings(max_examples=150, deadline=None)
@given(value=values_of(FILE_STATE))
def test_any_file_state_read_keeping_its_history_is_the_state_and_is_written_as_it_was(
    value: dict[str, Any],
) -> None:
    codec = Codec()
    data = codec.encode("FileState", value)
    name, kept = codec.decode_keeping(data, FIELD)
    assert name == "FileState"
    assert isinstance(kept[FIELD], EncodedItems)
    assert codec.encode("FileState", kept) == data  # before anything looks into it
    assert (name, kept) == codec.decode(data)
    assert codec.encode("FileState", kept) == data  # and after


def test_a_transition_added_is_written_as_in_a_list_and_nothing_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = Codec()
    state = sample("FileState") | {"history": [transition(1), transition(2)]}
    state["previous_versions"] = ["1:1", "2:2"]
    _name, kept = codec.decode_keeping(codec.encode("FileState", state), FIELD)
    undecodable(monkeypatch)

    added = kept | {FIELD: kept[FIELD].plus(Remembered(transition(3)))}
    empty = sample("FileState") | {"history": []}
    _name, none_yet = codec.decode_keeping(codec.encode("FileState", empty), FIELD)
    first = none_yet | {FIELD: none_yet[FIELD].plus(Remembered(transition(1)))}

    assert len(added[FIELD]) == 3
    assert codec.encode("FileState", added) == codec.encode(
        "FileState", state | {"history": [transition(1), transition(2), transition(3)]}
    )
    assert codec.encode("FileState", first) == codec.encode(
        "FileState", empty | {"history": [transition(1)]}
    )


def test_the_keeper_reads_a_state_back_and_folds_onto_it_without_decoding_its_history(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = Codec()
    arrival = sample("FileArrived")
    state = fold(None, "FileArrived", arrival, 1_700_000_000_000)
    assert state is not None
    raw = codec.encode("FileState", state)
    with KeeperStore(tmp_path / "keeper.sqlite") as store:
        store.apply([(0, 0, state["key"], _encoded(state, raw))])
        back = store.get(state["key"])
    assert back is not None and back == state
    undecodable(monkeypatch)

    event = sample("FileTransferred") | {"key": state["key"], "version": state["version"]}
    moved = fold(back, "FileTransferred", event, 1_700_000_000_500)

    assert moved is not None and moved["state"] == "TRANSFERRED"
    assert isinstance(moved[FIELD], EncodedItems) and len(moved[FIELD]) == 2
    monkeypatch.undo()
    expected = fold(state, "FileTransferred", event, 1_700_000_000_500)
    assert codec.encode("FileState", moved) == codec.encode("FileState", expected)


def test_a_kept_history_at_its_limit_drops_its_oldest_transition() -> None:
    codec = Codec()
    full = [transition(n) for n in range(HISTORY_LIMIT)]
    state = sample("FileState") | {"history": full}
    _name, kept = codec.decode_keeping(codec.encode("FileState", state), FIELD)

    longer = fold_module._appended(kept[FIELD], Remembered(transition(HISTORY_LIMIT)))

    assert list(longer) == [*full[1:], transition(HISTORY_LIMIT)]


def test_an_older_schema_version_is_decoded_whole() -> None:
    schema = dict(current_schemas()["FileState"].schema)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "warning"]
    older = Codec(writers={"FileState": schema})
    data = older.encode("FileState", sample("FileState"))

    name, state = Codec(
        readers={"FileState": current_schemas()["FileState"].schema}
    ).decode_keeping(data, FIELD)

    assert name == "FileState" and isinstance(state[FIELD], list)
    assert state[FIELD] == sample("FileState")["history"]


def test_a_history_in_several_blocks_is_decoded_whole() -> None:
    codec = Codec()
    one, two = Remembered(transition(1)), Remembered(transition(2))
    state = sample("FileState") | {"history": [one, two], "previous_versions": []}
    codec.encode("FileState", state)  # each transition remembers its bytes
    assert one.avro is not None and two.avro is not None
    data = codec.encode("FileState", state)
    _head, at = compile_head_reader(FILE_STATE, FIELD, positioned=True)(data, 10)
    blocks = data[:at] + b"\x02" + one.avro + b"\x02" + two.avro + b"\x00" + b"\x00"

    name, read = codec.decode_keeping(blocks, FIELD)

    assert isinstance(read[FIELD], list)
    assert (name, read) == codec.decode(data)


@pytest.mark.parametrize("cut", [5, 30, 60], ids=["in the history", "further", "near the end"])
def test_a_record_cut_short_is_a_corrupt_event(cut: int) -> None:
    codec = Codec()
    state = sample("FileState") | {"history": [transition(n) for n in range(4)]}
    data = codec.encode("FileState", state)
    with pytest.raises(CorruptEventError):
        codec.decode_keeping(data[: len(data) - cut], FIELD)


def _encoded(state: dict[str, Any], raw: bytes) -> Any:
    from consumers.state.keeper_store import Encoded

    return Encoded.of(state, raw)
