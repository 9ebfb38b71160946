"""The PNG writer, read back by an independent decoder (struct + zlib, every filter type)."""

from __future__ import annotations

import numpy as np
import pytest

from producers.danforth.png import encode_png
from tests.pngread import read_png


def test_rgb_round_trip() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    png = read_png(encode_png(pixels))
    assert (png.width, png.height, png.bit_depth, png.colour_type) == (5, 7, 8, 2)
    assert png.chunks == [b"IHDR", b"IDAT", b"IEND"]
    assert png.rows == [list(row.reshape(-1)) for row in pixels]


def test_grey_8_bit_round_trip() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (4, 9), dtype=np.uint8)
    png = read_png(encode_png(pixels, level=9))
    assert (png.bit_depth, png.colour_type) == (8, 0)
    assert png.rows == pixels.tolist()


def test_grey_16_bit_is_big_endian_and_round_trips() -> None:
    pixels = np.array([[0, 1, 256], [0x1234, 0xFFFF, 0xFF00]], dtype=np.uint16)
    data = encode_png(pixels)
    png = read_png(data)
    assert (png.bit_depth, png.colour_type, png.width, png.height) == (16, 0, 3, 2)
    assert png.rows == pixels.tolist()


def test_rows_use_the_up_filter_and_compress_a_smooth_picture() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    data = encode_png(ramp)
    png = read_png(data)
    assert png.filters == {2}
    assert png.rows == ramp.tolist()
    assert len(data) < ramp.size // 20


def test_one_pixel_picture() -> None:
    assert read_png(encode_png(np.array([[7]], dtype=np.uint8))).rows == [[7]]


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((2, 2, 4), dtype=np.uint8),
        np.zeros((2, 2), dtype=np.float32),
        np.zeros((0, 3), dtype=np.uint8),
        np.zeros(5, dtype=np.uint8),
    ],
)
def test_pictures_png_cannot_hold_are_refused(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_png(pixels)
