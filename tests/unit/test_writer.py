"""Compiled Avro writers: byte-for-byte what fastavro writes, and the same refusals."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec, CodecError, current_schemas
from schemas.writer import Remembered, UnsupportedSchema, compile_writer, varint
from tests.samples import sample

_LONG = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
_INT = st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1)
_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": _INT,
    "long": _LONG,
    "string": st.text(),
    "bytes": st.binary(),
}


def values_of(schema: Any, named: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Random values conforming to a parsed schema (the subset the event schemas use)."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return st.one_of(*(values_of(branch, named) for branch in schema))
    if isinstance(schema, str):
        return _PRIMITIVES[schema] if schema in _PRIMITIVES else values_of(named[schema], named)
    named[schema.get("name", "")] = schema
    if schema["type"] == "enum":
        return st.sampled_from(schema["symbols"])
    if schema["type"] == "record":
        return st.fixed_dictionaries(
            {f["name"]: values_of(f["type"], named) for f in schema["fields"]}
        )
    if schema["type"] == "array":
        return st.lists(values_of(schema["items"], named), max_size=4)
    if schema["type"] == "map":
        return st.dictionaries(st.text(), values_of(schema["values"], named), max_size=4)
    return values_of(schema["type"], named)


def fastavro_bytes(parsed: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, value)
    return buf.getvalue()


COMPILED = [name for name in sorted(current_schemas()) if Codec()._compiled[name] is not None]


def test_every_event_is_compiled() -> None:
    assert set(COMPILED) == set(current_schemas())  # every event the pipeline writes


@pytest.mark.parametrize("name", COMPILED)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_compiled_writer_matches_fastavro(name: str, data: st.DataObject) -> None:
    version = current_schemas()[name]
    value = data.draw(values_of(version.parsed))
    write = compile_writer(version.parsed, b"HDR")
    assert write(value) == b"HDR" + fastavro_bytes(version.parsed, value)


@given(_LONG)
def test_varint_matches_fastavro_for_every_long(n: int) -> None:
    assert varint((n << 1) ^ (n >> 63)) == fastavro_bytes("long", n)


def test_a_missing_field_takes_its_default() -> None:
    version = current_schemas()["FileArrived"]
    value = dict(Codec().decode(Codec().encode("FileArrived", _arrival()))[1])
    del value["attempt"], value["raw_path"]
    write = compile_writer(version.parsed)
    assert write(value) == fastavro_bytes(version.parsed, value)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"size": 1 << 63}, "does not fit"),
        ({"attempt": 1 << 31}, "does not fit"),
        ({"source": "CARRIER_PIGEON"}, "CARRIER_PIGEON"),
        ({"sensor": 7}, "int"),
        ({"site": None}, "NoneType"),
    ],
)
def test_bad_values_are_codec_errors(change: dict[str, Any], why: str) -> None:
    with pytest.raises(CodecError, match=why):
        Codec().encode("FileArrived", {**_arrival(), **change})


def test_a_missing_required_field_is_a_codec_error() -> None:
    value = _arrival()
    del value["key"]
    with pytest.raises(CodecError, match="key"):
        Codec().encode("FileArrived", value)


def test_unsupported_types_are_left_to_fastavro() -> None:
    schema = {"type": "record", "name": "M", "fields": [{"name": "m", "type": "double"}]}
    with pytest.raises(UnsupportedSchema):
        compile_writer(fastavro.parse_schema(schema))
    codec = Codec(writers={"M": schema})
    assert codec.decode(codec.encode("M", {"m": 1.5})) == ("M", {"m": 1.5})


def _arrival() -> dict[str, Any]:
    return dict(sample("FileArrived"))


def remembered(value: Any) -> Any:
    """``value`` with every record inside an array made :class:`Remembered`."""
    if isinstance(value, dict):
        return {k: remembered(v) for k, v in value.items()}
    if isinstance(value, list):
        return [Remembered(remembered(v)) if isinstance(v, dict) else v for v in value]
    return value


@pytest.mark.parametrize("name", ["FileState", "BatchSubmitted"])
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_remembered_items_write_what_fastavro_writes_the_first_time_and_every_time_after(
    name: str, data: st.DataObject
) -> None:
    version = current_schemas()[name]
    value = remembered(data.draw(values_of(version.parsed)))
    writer = compile_writer(version.parsed)
    expected = fastavro_bytes(version.parsed, value)

    assert writer(value) == expected  # written, and remembered
    assert writer(value) == expected  # copied


def test_a_remembered_transition_is_encoded_once_then_its_bytes_are_copied() -> None:
    codec = Codec()
    first = Remembered(state="ARRIVED", at_ms=1, evidence={"version": "1:2"})
    other = Remembered(state="BATCHED", at_ms=2, evidence={"batch_id": "b"})
    state = sample("FileState")
    codec.encode("FileState", state | {"history": [first, other]})
    assert first.avro is not None and other.avro is not None

    first.avro = other.avro  # what is written now is what it remembers, not what it holds

    assert codec.encode("FileState", state | {"history": [first]}) == codec.encode(
        "FileState", state | {"history": [dict(other)]}
    )
