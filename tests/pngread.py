"""A small PNG reader for tests, independent of the writer: struct and zlib, all five filters.

Checks the signature, every chunk's CRC and the chunk order, and returns the pixels as nested
lists so a test compares them without trusting numpy's view of the bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3}


@dataclass(frozen=True)
class Png:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    chunks: list[bytes]
    filters: set[int]
    rows: list[list[int]]  # samples per row (a 16-bit sample as one int)


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == SIGNATURE, "not a PNG signature"
    pos, found = 8, []
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert crc == zlib.crc32(kind + body), f"bad CRC on {kind!r}"
        found.append((kind, body))
        pos += 12 + length
    assert pos == len(data), "trailing bytes after the last chunk"
    return found


def read_png(data: bytes) -> Png:
    chunks = chunks_of(data)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (comp, filt, interlace) == (0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    bpp = CHANNELS[colour] * depth // 8
    stride = width * bpp
    assert len(raw) == height * (stride + 1), "IDAT does not hold height rows"
    previous = bytearray(stride)
    rows, filters = [], set()
    for r in range(height):
        line = raw[r * (stride + 1) : (r + 1) * (stride + 1)]
        filters.add(line[0])
        current = _unfilter(line[0], bytearray(line[1:]), previous, bpp)
        rows.append(_samples(bytes(current), depth))
        previous = current
    return Png(width, height, depth, colour, kinds, filters, rows)


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> bytearray:
    out = bytearray(len(line))
    for i, x in enumerate(line):
        a = out[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if kind == 0:
            value = x
        elif kind == 1:
            value = x + a
        elif kind == 2:
            value = x + b
        elif kind == 3:
            value = x + (a + b) // 2
        elif kind == 4:
            value = x + _paeth(a, b, c)
        else:
            raise AssertionError(f"unknown filter type {kind}")
        out[i] = value & 0xFF
    return out


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _samples(row: bytes, depth: int) -> list[int]:
    if depth == 8:
        return list(row)
    return [int.from_bytes(row[i : i + 2], "big") for i in range(0, len(row), 2)]
