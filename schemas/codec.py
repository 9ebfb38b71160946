"""Avro single-object encoding of every terra-xfer event.

Wire format (Avro specification, "Single object encoding"): the two marker bytes ``C3 01``, the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary
body. A reader finds the writer's schema by fingerprint among every *published* version (``published/``)
and resolves it against the current schema of the same name, so events written by an older or newer
release stay readable as long as the change is a compatible one (e.g. a field added with a default).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from schemas.head_reader import (
    HeadReader,
    SeveralBlocks,
    Skipper,
    array_items,
    compile_head_reader,
    compile_skipper,
)
from schemas.writer import EncodedItems, UnsupportedSchema, Writer, compile_writer

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
NAMESPACE = "terra.xfer"

_EMPTY = 0xC15D213AA4D7A795
_TABLE: list[int] = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY & -(_fp & 1))
    _TABLE.append(_fp)


class CodecError(ValueError):
    """An event could not be encoded or decoded; the message says why in one sentence.

    A plain ``ValueError``: the schemas import nothing of the runtime. A stage treats it as
    permanent (the message is dead-lettered with this reason, never retried).
    """


class UnknownSchemaError(CodecError):
    """The event names a writer schema (by fingerprint) that no published version matches."""


class CorruptEventError(CodecError):
    """The bytes are not a well-formed single-object-encoded event."""


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO fingerprint (Rabin) of ``data``, as the Avro specification defines it."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


@dataclass(frozen=True)
class SchemaVersion:
    """One published version of a record schema."""

    name: str
    fingerprint: int
    schema: dict[str, Any]
    parsed: Any

    @property
    def header(self) -> bytes:
        return MAGIC + struct.pack("<Q", self.fingerprint)


def _compiled(version: SchemaVersion) -> Writer | None:
    """A compiled writer of ``version``'s header and body, or None to use fastavro."""
    try:
        return compile_writer(version.parsed, version.header)
    except UnsupportedSchema:
        return None


def _version(schema: dict[str, Any]) -> SchemaVersion:
    parsed = fastavro.parse_schema(schema)
    canonical = to_parsing_canonical_form(parsed)
    name = f"{schema.get('namespace', NAMESPACE)}.{schema['name']}"
    return SchemaVersion(name, crc64_avro(canonical.encode()), schema, parsed)


def _load_dir(package: str) -> list[SchemaVersion]:
    root = resources.files(package)
    return [
        _version(json.loads(entry.read_text(encoding="utf-8")))
        for entry in sorted(root.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".avsc")
    ]


class _Keeping:
    """Decodes a record of one schema version whole but for one array field, kept as its items'
    bytes (:meth:`Codec.decode_keeping`)."""

    def __init__(self, version: SchemaVersion, field: str) -> None:
        at = [f["name"] for f in version.parsed["fields"]].index(field)
        array = next(f["type"] for f in version.parsed["fields"] if f["name"] == field)
        if not isinstance(array, dict) or array.get("type") != "array":
            raise UnsupportedSchema(f"{field!r} is not an array")
        self.field = field
        self.head = compile_head_reader(version.parsed, field, positioned=True)
        self.skip_item: Skipper = compile_skipper(array["items"])
        # Standalone schemas of the array and of the fields after it (as the parsed schema spells
        # them): one that names a type defined elsewhere in the record is not supported.
        rest = list(version.parsed["fields"][at + 1 :])
        try:
            self.items = fastavro.parse_schema(dict(array))
            self.rest = fastavro.parse_schema({"type": "record", "name": "_Rest", "fields": rest})
            self.decode_items(b"\x00")
        except fastavro.schema.SchemaParseException as exc:
            raise UnsupportedSchema(str(exc)) from exc

    def decode_items(self, whole: bytes) -> list[Any]:
        """The items of an array from its whole encoding."""
        items = fastavro.schemaless_reader(io.BytesIO(whole), self.items, None)
        assert isinstance(items, list)
        return items

    def __call__(self, data: bytes) -> dict[str, Any]:
        out, pos = self.head(data, HEADER_LEN)
        count, start, end, pos = array_items(data, pos, self.skip_item)
        out[self.field] = EncodedItems(count, data[start:end], self.decode_items)
        buf = io.BytesIO(data)
        buf.seek(pos)
        rest = fastavro.schemaless_reader(buf, self.rest, None)
        assert isinstance(rest, dict)
        out.update(rest)
        pos = buf.tell()
        if pos != len(data):
            raise ValueError(f"{len(data) - pos} trailing bytes")
        return out  # type: ignore[no-any-return]


@cache
def current_schemas() -> dict[str, SchemaVersion]:
    """The schema every writer uses now, by short record name (``FileArrived``)."""
    return {v.name.rsplit(".", 1)[1]: v for v in _load_dir("schemas")}


@cache
def published_schemas() -> dict[int, SchemaVersion]:
    """Every schema version ever published, by fingerprint: what readers accept."""
    return {v.fingerprint: v for v in _load_dir("schemas.published")}


class Codec:
    """Encodes and decodes events; holds the registry of published schema versions.

    ``readers`` and ``writers`` override the schema per record name (tests use them to read and write
    as an older or newer release would); their schemas count as published.
    """

    def __init__(
        self,
        readers: Mapping[str, dict[str, Any]] | None = None,
        writers: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self._writers = dict(current_schemas())
        self._writers.update({name: _version(s) for name, s in (writers or {}).items()})
        self._readers = dict(current_schemas())
        self._readers.update({name: _version(s) for name, s in (readers or {}).items()})
        self._known = dict(published_schemas())
        for version in [*self._writers.values(), *self._readers.values()]:
            self._known.setdefault(version.fingerprint, version)
        self._compiled = {name: _compiled(version) for name, version in self._writers.items()}
        self._heads: dict[tuple[int, str], HeadReader | None] = {}
        self._keeping: dict[tuple[int, str], _Keeping | None] = {}

    def encode(self, record_name: str, value: Mapping[str, Any]) -> bytes:
        """Encode ``value`` as the current version of ``record_name`` (e.g. ``"FileArrived"``)."""
        compiled = self._compiled.get(record_name)
        if compiled is not None:
            try:
                return compiled(value)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise CodecError(f"cannot encode {record_name}: {exc}") from exc
        writer = self._writer(record_name)
        buf = io.BytesIO()
        buf.write(writer.header)
        try:
            fastavro.schemaless_writer(buf, writer.parsed, value)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"cannot encode {record_name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode one event into (record name, value), resolving the writer's schema by fingerprint."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise CorruptEventError(
                "not an Avro single-object-encoded event (bad marker or too short)"
            )
        (fingerprint,) = struct.unpack_from("<Q", data, 2)
        writer = self._known.get(fingerprint)
        if writer is None:
            raise UnknownSchemaError(f"no published schema has fingerprint {fingerprint:016x}")
        short = writer.name.rsplit(".", 1)[1]
        reader = self._readers.get(short)
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if reader is None or reader.fingerprint == fingerprint:
                value = fastavro.schemaless_reader(buf, writer.parsed, None)
            else:
                value = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro raises many types on corrupt bodies; all mean the same
            raise CorruptEventError(f"corrupt {short} body: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise CorruptEventError(
                f"corrupt {short} body: {len(data) - buf.tell()} trailing bytes"
            )
        return short, value  # type: ignore[return-value]

    def decode_head(self, data: bytes, stop_at: str) -> tuple[str, dict[str, Any]]:
        """Decode one event's fields before ``stop_at`` into (record name, value).

        Only for an event written with the current schema of its record, which needs no
        resolution; any other version, or a record without a field ``stop_at``, is decoded whole
        (a superset of the head). The rest of the body is not read, so not checked either.
        """
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            return self.decode(data)  # raises the error a full decode would
        (fingerprint,) = struct.unpack_from("<Q", data, 2)
        reader = self._head_reader(fingerprint, stop_at)
        if reader is None:
            return self.decode(data)
        version = self._known[fingerprint]
        short = version.name.rsplit(".", 1)[1]
        try:
            return short, reader(data, HEADER_LEN)
        except (IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise CorruptEventError(f"corrupt {short} body: {type(exc).__name__}: {exc}") from exc

    def decode_keeping(self, data: bytes, field: str) -> tuple[str, dict[str, Any]]:
        """Decode one event as :meth:`decode` does, but for the array ``field``, kept as its items'
        bytes (:class:`~schemas.writer.EncodedItems`): written again as they are, decoded only
        when looked into. An event of another schema version than its record's current one, or
        whose array is in several blocks, is decoded whole."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            return self.decode(data)  # raises the error a full decode would
        (fingerprint,) = struct.unpack_from("<Q", data, 2)
        key = (fingerprint, field)
        if key not in self._keeping:
            version = self._current(fingerprint)
            try:
                self._keeping[key] = None if version is None else _Keeping(version, field)
            except (UnsupportedSchema, ValueError):
                self._keeping[key] = None
        keeping = self._keeping[key]
        if keeping is None:
            return self.decode(data)
        short = self._known[fingerprint].name.rsplit(".", 1)[1]
        try:
            return short, keeping(data)
        except SeveralBlocks:
            return self.decode(data)
        except (IndexError, ValueError, EOFError) as exc:  # UnicodeDecodeError is a ValueError
            raise CorruptEventError(f"corrupt {short} body: {type(exc).__name__}: {exc}") from exc

    def _current(self, fingerprint: int) -> SchemaVersion | None:
        """The version of ``fingerprint`` when it is its record's current one (read as written)."""
        version = self._known.get(fingerprint)
        current = None if version is None else self._readers.get(version.name.rsplit(".", 1)[1])
        if version is not None and current is not None and current.fingerprint == fingerprint:
            return version
        return None

    def _head_reader(self, fingerprint: int, stop_at: str) -> HeadReader | None:
        key = (fingerprint, stop_at)
        if key not in self._heads:
            version = self._current(fingerprint)
            reader = None
            if version is not None:
                try:
                    reader = compile_head_reader(version.parsed, stop_at)
                except UnsupportedSchema:
                    reader = None
            self._heads[key] = reader
        return self._heads[key]

    def _writer(self, record_name: str) -> SchemaVersion:
        try:
            return self._writers[record_name]
        except KeyError:
            raise CodecError(f"unknown record type {record_name!r}") from None


def record_name_of(data: bytes) -> str | None:
    """The short record name of an encoded event, from its fingerprint alone; None when unknown."""
    if len(data) < HEADER_LEN or data[:2] != MAGIC:
        return None
    (fingerprint,) = struct.unpack_from("<Q", data, 2)
    version = published_schemas().get(fingerprint) or next(
        (v for v in current_schemas().values() if v.fingerprint == fingerprint), None
    )
    return version.name.rsplit(".", 1)[1] if version else None
