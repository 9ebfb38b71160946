"""Head readers: a record's leading fields read exactly as fastavro reads them, the rest left unread."""

from __future__ import annotations

from typing import Any

import fastavro
import pytest
from hypothesis import given, settings

from schemas.codec import Codec, CorruptEventError, current_schemas
from schemas.head_reader import compile_head_reader, read_long
from schemas.writer import UnsupportedSchema, long_bytes
from tests.samples import sample
from tests.unit.test_writer import _LONG, values_of

FILE_STATE = current_schemas()["FileState"].parsed
STOP = "history"


def head_of(value: dict[str, Any]) -> dict[str, Any]:
    names = [f["name"] for f in FILE_STATE["fields"]]
    return {k: value[k] for k in names[: names.index(STOP)]}


@settings(max_examples=150, deadline=None)
@given(value=values_of(FILE_STATE))
def test_the_head_of_any_file_state_is_what_a_full_decode_reads(value: dict[str, Any]) -> None:
    codec = Codec()
    data = codec.encode("FileState", value)
    name, full = codec.decode(data)
    assert codec.decode_head(data, STOP) == (name, head_of(full))


@given(_LONG)
def test_varints_are_read_back_as_written(n: int) -> None:
    encoded = long_bytes(n)
    assert read_long(b"x" + encoded + b"y", 1) == (n, 1 + len(encoded))


def test_only_the_head_is_read() -> None:
    codec = Codec()
    data = codec.encode("FileState", sample("FileState"))
    # Garbage where the history begins: a full decode fails, the head does not look there.
    head_end = len(codec.encode("FileState", sample("FileState") | {"history": []})) - 2
    broken = data[:head_end] + b"\xff" * (len(data) - head_end)
    with pytest.raises(CorruptEventError):
        codec.decode(broken)
    assert codec.decode_head(broken, STOP)[1] == head_of(sample("FileState") | {"history": []})


@pytest.mark.parametrize(
    "cut", [11, 40, -30], ids=["at the start", "inside a string", "near the end of the head"]
)
def test_a_truncated_head_is_a_corrupt_event(cut: int) -> None:
    codec = Codec()
    value = sample("FileState") | {"history": [], "previous_versions": []}
    data = codec.encode("FileState", value)
    with pytest.raises(CorruptEventError):
        codec.decode_head(data[:cut] if cut > 0 else data[: len(data) + cut - 2], STOP)


def test_an_enum_index_out_of_range_is_a_corrupt_event() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "E",
            "fields": [
                {"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B"]}},
                {"name": "rest", "type": "string"},
            ],
        }
    )
    read = compile_head_reader(schema, "rest")
    assert read(long_bytes(1), 0) == {"s": "B"}
    for index in (2, -1):
        with pytest.raises((IndexError, ValueError)):
            read(long_bytes(index), 0)


def test_other_versions_and_unknown_fields_are_decoded_whole() -> None:
    old = dict(current_schemas()["FileState"].schema)
    old["fields"] = [f for f in old["fields"] if f["name"] != "previous_versions"]
    writer = Codec(writers={"FileState": old})
    value = sample("FileState")
    data = writer.encode("FileState", value)
    # Read with the current schema: the old version is resolved, so decoded whole.
    assert writer.decode_head(data, STOP) == writer.decode(data)
    assert "previous_versions" in writer.decode_head(data, STOP)[1]
    current = Codec().encode("FileState", value)
    assert Codec().decode_head(current, "no such field") == Codec().decode(current)
    with pytest.raises(CorruptEventError):
        Codec().decode_head(b"\x00\x01not an event", STOP)


def test_a_head_of_unsupported_types_is_refused() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "tags", "type": {"type": "array", "items": "string"}},
                {"name": "rest", "type": "string"},
            ],
        }
    )
    with pytest.raises(UnsupportedSchema):
        compile_head_reader(schema, "rest")
    assert compile_head_reader(schema, "tags")(b"", 0) == {}
