"""Hostile bytes at the Avro decoder and the stage's dead-lettering: no crash, one dead letter each.

Whatever a topic holds (random bytes, truncated or corrupted events, events of a schema nobody
published, tombstones), decoding either gives a valid event or a ``CodecError`` with a reason, and
``decode_or_dead_letter`` turns every bad message into exactly one DeadLetter that keeps the raw
bytes, the reason and where it came from.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import (
    HEADER_LEN,
    MAGIC,
    Codec,
    CodecError,
    CorruptEventError,
    UnknownSchemaError,
    current_schemas,
    published_schemas,
)
from terra_xfer.config import Config
from terra_xfer.stages.outputs import decode_or_dead_letter
from terra_xfer.topics import DEADLETTER
from tests.samples import sample

RECORDS = sorted(current_schemas())
CODEC = Codec()
CONFIG = Config()
TOPIC = "terra.files.arrived"
ACCEPT = frozenset({"FileArrived"})
HOSTILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encoded(name: str) -> bytes:
    return CODEC.encode(name, sample(name))


def decodes_or_refuses(data: bytes) -> tuple[str, dict[str, Any]] | CodecError:
    """The decoded event, or the CodecError; any other exception fails the test."""
    try:
        return CODEC.decode(data)
    except CodecError as exc:
        assert str(exc), "a decode error must say why"
        return exc


@HOSTILE
@given(st.binary(max_size=600))
def test_random_bytes_decode_or_raise_a_codec_error(data: bytes) -> None:
    decodes_or_refuses(data)


@HOSTILE
@given(st.sampled_from(RECORDS), st.binary(max_size=400))
def test_random_bodies_behind_a_known_header_decode_to_valid_events_or_refuse(
    name: str, body: bytes
) -> None:
    data = current_schemas()[name].header + body
    result = decodes_or_refuses(data)
    if not isinstance(result, CodecError):
        decoded_name, value = result
        assert decoded_name == name
        assert CODEC.decode(CODEC.encode(name, value)) == (name, value)  # a valid event


@pytest.mark.parametrize("name", RECORDS)
def test_every_truncation_of_every_event_is_corrupt(name: str) -> None:
    data = encoded(name)
    for cut in range(len(data)):
        with pytest.raises(CorruptEventError):
            CODEC.decode(data[:cut])


@HOSTILE
@given(
    st.sampled_from(RECORDS),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]), st.integers(0), st.integers(0, 255)
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_corrupted_events_decode_to_valid_events_or_refuse(
    name: str, edits: list[tuple[str, int, int]]
) -> None:
    data = bytearray(encoded(name))
    for kind, where, byte in edits:
        at = HEADER_LEN + where % max(1, len(data) - HEADER_LEN)
        if kind == "flip" and at < len(data):
            data[at] ^= byte or 1
        elif kind == "insert":
            data.insert(at, byte)
        elif at < len(data):
            del data[at]
    result = decodes_or_refuses(bytes(data))
    if not isinstance(result, CodecError):
        assert result[0] == name  # the header was left alone: same writer schema


@HOSTILE
@given(st.integers(0, 2**64 - 1), st.binary(max_size=64))
def test_unknown_fingerprints_are_refused_by_name(fingerprint: int, body: bytes) -> None:
    known = set(published_schemas()) | {v.fingerprint for v in current_schemas().values()}
    if fingerprint in known:
        return
    with pytest.raises(UnknownSchemaError, match=f"{fingerprint:016x}"):
        CODEC.decode(MAGIC + struct.pack("<Q", fingerprint) + body)


# --- the stage's dead-lettering ------------------------------------------------------------------


def unknown_fingerprint(body: bytes) -> bytes:
    return MAGIC + struct.pack("<Q", 0xDEADBEEF) + body


KINDS: dict[str, Any] = {
    "good": lambda b: encoded("FileArrived"),
    "random": lambda b: b,
    "truncated": lambda b: encoded("FileArrived")[: len(b) % len(encoded("FileArrived"))],
    "unknown": unknown_fingerprint,
    "unexpected": lambda b: encoded("FileState"),
    "tombstone": lambda b: None,
}


def message(value: bytes | None, offset: int, key: bytes | None) -> Message:
    return Message(topic=TOPIC, partition=offset % 3, offset=offset, key=key, value=value)


@HOSTILE
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(KINDS)),
            st.binary(max_size=120),
            st.none() | st.binary(max_size=40),
        ),
        max_size=25,
    )
)
def test_every_bad_message_becomes_exactly_one_dead_letter_with_its_reason(
    batch: list[tuple[str, bytes, bytes | None]],
) -> None:
    messages = [message(KINDS[kind](b), i, key) for i, (kind, b, key) in enumerate(batch)]
    good, bad = decode_or_dead_letter(CONFIG, CODEC, "ingest", messages, ACCEPT)

    expected_good = [m for m in messages if m.value() is not None and _is_good(m.value())]
    assert [d.msg.offset() for d in good] == [m.offset() for m in expected_good]
    assert all(d.record == "FileArrived" for d in good)
    bad_messages = [m for m in messages if m.value() is not None and not _is_good(m.value())]
    assert len(bad) == len(bad_messages)  # tombstones are skipped, nothing else is
    for out, msg in zip(bad, bad_messages, strict=True):
        assert out.topic == CONFIG.topic(DEADLETTER) and out.key == "ingest"
        assert out.value is not None
        name, letter = CODEC.decode(out.value)
        assert name == "DeadLetter"
        assert letter["reason"] and letter["source"] == "ingest"
        assert letter["raw"] == msg.value()
        assert (letter["origin"], letter["offset"], letter["partition"]) == (
            TOPIC,
            msg.offset(),
            msg.partition(),
        )
        raw_key = msg.key()
        if raw_key:
            assert letter["key"] == raw_key.decode("utf-8", "backslashreplace")


def _is_good(value: bytes | None) -> bool:
    try:
        return value is not None and CODEC.decode(value)[0] in ACCEPT
    except CodecError:
        return False


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "bad marker or too short"),
        (b'{"json": true}', "bad marker or too short"),
        (unknown_fingerprint(b"\x00"), "no published schema has fingerprint 00000000deadbeef"),
        (encoded("FileArrived")[:-3], "corrupt FileArrived body"),
        (encoded("FileArrived") + b"\x00", "1 trailing bytes"),
        (encoded("FileState"), "FileState is not an event ingest expects on terra.files.arrived"),
    ],
)
def test_dead_letter_reasons_say_what_was_wrong(value: bytes, reason: str) -> None:
    _good, bad = decode_or_dead_letter(
        CONFIG, CODEC, "ingest", [message(value, 7, b"\xff key")], ACCEPT
    )
    assert len(bad) == 1 and bad[0].value is not None
    _name, letter = CODEC.decode(bad[0].value)
    assert reason in letter["reason"]
    assert letter["key"] == "\\xff key"
