"""The PNG writer, read back by an independent decoder (struct + zlib, every filter type)."""

from __future__ import annotations

import cv2
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


@pytest.mark.parametrize("level", [1, 3, 6])
def test_opencv_decodes_every_kind_of_picture_pixel_for_pixel(level: int) -> None:
    """ISA-L's deflate (levels 1 to 3) and zlib's (others) both make PNGs a standard reader
    takes: OpenCV's own decoder gives back every pixel (colour pictures in its BGR order)."""
    rng = np.random.default_rng(level)
    y, x = np.mgrid[0:120, 0:90]
    smooth = ((x * 3 + y * 2) % 256).astype(np.uint8)
    pictures = [
        np.dstack([smooth, smooth[::-1], rng.integers(0, 256, smooth.shape, dtype=np.uint8)]),
        smooth,
        (smooth.astype(np.uint16) * 257) ^ rng.integers(0, 16, smooth.shape, dtype=np.uint16),
    ]
    for pixels in pictures:
        data = np.frombuffer(encode_png(pixels, level), dtype=np.uint8)
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        expected = pixels[..., ::-1] if pixels.ndim == 3 else pixels
        assert decoded.dtype == pixels.dtype and np.array_equal(decoded, expected)
