"""The Avro contract: single-object encoding, published versions, evolution, typed errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.codec import (
    MAGIC,
    Codec,
    CodecError,
    CorruptEventError,
    UnknownSchemaError,
    crc64_avro,
    current_schemas,
    published_schemas,
)
from tests.samples import sample

RECORDS = sorted(current_schemas())


def test_crc64_matches_the_avro_specification() -> None:
    # Avro's test vector for the schema "int" is 8f5c393f1ad57572 (little-endian bytes).
    assert struct.pack("<Q", crc64_avro(b'"int"')).hex() == "8f5c393f1ad57572"
    for version in current_schemas().values():
        canonical = to_parsing_canonical_form(version.parsed)
        assert struct.pack("<Q", version.fingerprint).hex() == fingerprint(canonical, "CRC-64-AVRO")


def test_every_record_the_stages_need_exists() -> None:
    assert set(RECORDS) >= {
        "FileArrived",
        "FileMissing",
        "BatchSubmitted",
        "FileTransferred",
        "FileTransferFailed",
        "FileIngested",
        "FileIngestFailed",
        "FileDeleted",
        "FileState",
        "Checkpoint",
        "DeadLetter",
    }


def test_every_current_schema_is_published_unchanged() -> None:
    published = published_schemas()
    for name, version in current_schemas().items():
        assert version.fingerprint in published, f"{name} changed: run python -m schemas.publish"
    for path in (Path(__file__).parents[2] / "schemas" / "published").glob("*.avsc"):
        fp = int(path.name.split(".")[1], 16)
        assert fp in published, f"{path.name} was edited after publication"


@pytest.mark.parametrize("name", RECORDS)
def test_round_trip_and_header(name: str) -> None:
    codec = Codec()
    data = codec.encode(name, sample(name))
    assert data[:2] == MAGIC
    assert struct.unpack_from("<Q", data, 2)[0] == current_schemas()[name].fingerprint
    assert codec.decode(data) == (name, sample(name))


def test_unknown_fingerprint_is_a_typed_error() -> None:
    data = MAGIC + struct.pack("<Q", 0x1234) + b"\x00"
    with pytest.raises(UnknownSchemaError, match="0000000000001234"):
        Codec().decode(data)


@pytest.mark.parametrize("data", [b"", b"\xc3", b"{json: true}", b"\xc3\x02" + b"\x00" * 9])
def test_not_single_object_encoded(data: bytes) -> None:
    with pytest.raises(CorruptEventError):
        Codec().decode(data)


def test_truncated_and_padded_bodies_are_corrupt() -> None:
    codec = Codec()
    data = codec.encode("FileArrived", sample("FileArrived"))
    with pytest.raises(CorruptEventError, match="FileArrived"):
        codec.decode(data[:-5])
    with pytest.raises(CorruptEventError, match="trailing"):
        codec.decode(data + b"\x00")


def test_encoding_a_bad_value_names_the_record() -> None:
    value = sample("Checkpoint") | {"events": "many"}
    with pytest.raises(CodecError, match="Checkpoint"):
        Codec().encode("Checkpoint", value)


def _schema(name: str) -> dict[str, object]:
    return json.loads(json.dumps(current_schemas()[name].schema))


def test_new_reader_reads_old_events_with_the_default() -> None:
    old = _schema("FileArrived")
    old["fields"] = [f for f in old["fields"] if f["name"] != "username"]  # type: ignore[index]
    value = {k: v for k, v in sample("FileArrived").items() if k != "username"}
    data = Codec(writers={"FileArrived": old}).encode("FileArrived", value)
    name, decoded = Codec(readers={"FileArrived": old}).decode(data)
    assert decoded == value
    name, decoded = Codec(writers={"FileArrived": old}).decode(data)  # reader: current schema
    assert name == "FileArrived" and decoded["username"] is None
    assert decoded["path"] == value["path"]


def test_events_of_the_first_published_version_stay_readable() -> None:
    first = min(
        (v for v in published_schemas().values() if v.name.endswith(".FileArrived")),
        key=lambda v: "attempt" in json.dumps(v.schema),
    )
    assert "attempt" not in json.dumps(first.schema)
    value = {k: v for k, v in sample("FileArrived").items() if k != "attempt"}
    data = Codec(writers={"FileArrived": first.schema}).encode("FileArrived", value)
    assert Codec().decode(data) == ("FileArrived", value | {"attempt": 1})


def test_old_reader_reads_new_events_ignoring_the_added_field() -> None:
    new = _schema("FileArrived")
    new["fields"].append({"name": "camera", "type": "string", "default": "none"})  # type: ignore[union-attr]
    value = sample("FileArrived") | {"camera": "left"}
    data = Codec(writers={"FileArrived": new}).encode("FileArrived", value)
    _name, decoded = Codec(
        readers={"FileArrived": _schema("FileArrived")}, writers={"FileArrived": new}
    ).decode(data)
    assert decoded == sample("FileArrived")


def test_file_states_written_before_missing_existed_stay_readable() -> None:
    older = [
        v
        for v in published_schemas().values()
        if v.name.endswith(".FileState") and "MISSING" not in json.dumps(v.schema)
    ]
    assert older, "the FileState versions before MISSING are published"
    current = Codec()
    for version in older:
        data = Codec(writers={"FileState": version.schema}).encode("FileState", sample("FileState"))
        assert current.decode(data) == ("FileState", sample("FileState"))
    missing = sample("FileState") | {"state": "MISSING", "version": "0:0"}
    assert current.decode(current.encode("FileState", missing))[1]["state"] == "MISSING"


@pytest.mark.parametrize("name", ["FileIngested", "FileState"])
def test_records_written_before_the_ingest_warning_stay_readable(name: str) -> None:
    older = [
        v
        for v in published_schemas().values()
        if v.name.endswith(f".{name}") and '"warning"' not in json.dumps(v.schema)
    ]
    assert older, f"the {name} versions before the warning are published"
    value = sample(name) | {"warning": None}
    without = {k: v for k, v in value.items() if k != "warning"}
    current = Codec()
    for version in older:
        data = Codec(writers={name: version.schema}).encode(name, without)
        assert current.decode(data) == (name, value)
    warned = value | {"warning": "metadata x_metadata.json could not be read (not JSON: ...)"}
    assert current.decode(current.encode(name, warned)) == (name, warned)
    old_reader = Codec(readers={name: max(older, key=lambda v: v.fingerprint).schema})
    assert old_reader.decode(current.encode(name, warned)) == (name, without)
