"""Raw LemnaTec frames into pictures: cameras, demosaic, scaling, rotation and corrupt sizes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from producers.danforth.cameras import Cameras, FrameSpec, Kind, kind_of
from producers.danforth.errors import ImageError
from producers.danforth.frames import bayer_rg_to_rgb, rotate_180, scale_16, to_pixels
from terra_xfer.errors import ConfigError

# Where each colour is sampled in a "Bayer RG" (OpenCV naming) mosaic: rows B G B G / G R G R.
SITE = {(0, 0): 2, (0, 1): 1, (1, 0): 1, (1, 1): 0}
NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def mosaic_of(rgb: tuple[int, int, int], h: int, w: int) -> np.ndarray:
    out = np.empty((h, w), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            out[y, x] = rgb[SITE[(y % 2, x % 2)]]
    return out


def mirror(i: int, n: int) -> int:
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def reference_demosaic(raw: np.ndarray) -> list[list[list[int]]]:
    """Bilinear by definition: a site's own sample, else the rounded mean of the nearest samples
    of that colour (left/right, up/down, the four diagonals or the four sides), mirrored borders."""
    h, w = raw.shape
    out = []
    for y in range(h):
        row = []
        for x in range(w):
            pixel = []
            for channel in range(3):
                if SITE[(y % 2, x % 2)] == channel:
                    pixel.append(int(raw[y, x]))
                    continue
                near = [
                    int(raw[mirror(y + dy, h), mirror(x + dx, w)])
                    for dy, dx in NEIGHBOURS
                    if SITE[(mirror(y + dy, h) % 2, mirror(x + dx, w) % 2)] == channel
                    and (channel != 1 or dy == 0 or dx == 0)
                ]
                pixel.append((sum(near) + len(near) // 2) // len(near))
            row.append(pixel)
        out.append(row)
    return out


@pytest.mark.parametrize("shape", [(3, 3), (4, 6), (5, 7), (8, 3), (64, 80)])
def test_demosaic_is_bilinear_inside_the_border(shape: tuple[int, int]) -> None:
    raw = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    inside = np.array(reference_demosaic(raw))[1:-1, 1:-1]
    assert bayer_rg_to_rgb(raw)[1:-1, 1:-1].tolist() == inside.tolist()


def test_demosaic_is_the_extractors_conversion_in_rgb_order() -> None:
    """Danforth's extractor calls ``cvtColor(raw, COLOR_BayerRG2BGR)``; the PNG holds the same
    pixels in RGB order, the border included."""
    raw = np.random.default_rng(7).integers(0, 256, (2056, 2454), dtype=np.uint8)
    extractor = cv2.cvtColor(raw, cv2.COLOR_BayerRG2BGR)
    assert np.array_equal(bayer_rg_to_rgb(raw), extractor[..., ::-1])


def test_a_uniform_colour_comes_back_uniform_to_the_borders() -> None:
    colour = (200, 120, 30)
    rgb = bayer_rg_to_rgb(mosaic_of(colour, 6, 8))
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert {tuple(p) for p in rgb.reshape(-1, 3).tolist()} == {colour}


def test_bayer_rg_is_blue_where_rows_and_columns_are_even() -> None:
    raw = np.zeros((6, 6), dtype=np.uint8)
    raw[2, 2] = 255  # a blue site in OpenCV's "RG" pattern
    rgb = bayer_rg_to_rgb(raw)
    assert rgb[2, 2].tolist() == [0, 0, 255]


def test_demosaic_refuses_a_non_mosaic() -> None:
    with pytest.raises(ValueError):
        bayer_rg_to_rgb(np.zeros((1, 5), dtype=np.uint8))


def test_scaling_uses_the_16_bit_range_and_saturates() -> None:
    raw = np.array([0, 1, 4095, 4096, 65535], dtype=np.uint16)
    assert scale_16(raw, 16).tolist() == [0, 16, 65520, 65535, 65535]
    assert scale_16(np.array([16383, 16384], dtype=np.uint16), 4).tolist() == [65532, 65535]


def test_rotate_180_reverses_rows_and_columns() -> None:
    grid = np.arange(6, dtype=np.uint8).reshape(2, 3)
    turned = rotate_180(grid)
    assert turned.tolist() == [[5, 4, 3], [2, 1, 0]]
    assert turned.flags["C_CONTIGUOUS"]
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    grey16 = np.arange(5 * 7, dtype=np.uint16).reshape(5, 7) * 1000
    for picture in (rgb, grey16):
        assert np.array_equal(rotate_180(picture), picture[::-1, ::-1])
        assert rotate_180(picture).dtype == picture.dtype


def test_kinds_from_the_label() -> None:
    assert kind_of("VIS_SV_0_z1_h1_g0_e82") is Kind.VIS
    assert kind_of("vis_tv_z1") is Kind.VIS
    assert kind_of("NIR_TV_z1_h1_g0_e35") is Kind.NIR
    assert kind_of("PSII_PS1_MAX") is Kind.PSII
    assert kind_of("Fluo_SV_90") is Kind.PSII


def test_camera_sizes_by_longest_prefix_then_by_kind() -> None:
    cameras = Cameras(["VIS=8x6", "VIS_TV=10x4", "NIR=4x2", "PSII=2x2"])
    assert cameras.size_of("VIS_SV_90_z1") == (8, 6)
    assert cameras.size_of("VIS_TV_z1_h1") == (10, 4)
    assert cameras.size_of("Fluo_SV") == (2, 2)  # a PSII camera by kind
    assert cameras.spec("NIR_SV_0", 0) == FrameSpec(Kind.NIR, 4, 2, 1)
    assert cameras.spec("NIR_SV_0", 4) == FrameSpec(Kind.NIR, 4, 2, 2)
    assert cameras.spec("PSII_PS1", None).bytes_per_pixel == 2
    assert cameras.spec("VIS_SV_0", 4).expected_bytes == 48


@pytest.mark.parametrize("entry", ["VIS", "VIS=8", "VIS=0x6", "=8x6", "VIS=axb"])
def test_bad_camera_entries_are_config_errors(entry: str) -> None:
    with pytest.raises(ConfigError, match="PREFIX=WIDTHxHEIGHT"):
        Cameras([entry])


def test_unknown_nir_format_and_unsized_camera_are_unsupported() -> None:
    cameras = Cameras(["NIR=4x2"])
    with pytest.raises(ImageError, match="dataformat 7") as bad_format:
        cameras.spec("NIR_SV_0", 7)
    assert bad_format.value.kind == "unsupported"
    with pytest.raises(ImageError, match="no frame size") as unsized:
        cameras.spec("VIS_SV_0", 0)
    assert unsized.value.kind == "unsupported"


def test_to_pixels_per_kind() -> None:
    vis = to_pixels(FrameSpec(Kind.VIS, 4, 2, 1), bytes(range(8)), 0)
    assert vis.shape == (2, 4, 3) and vis.dtype == np.uint8
    nir8 = to_pixels(FrameSpec(Kind.NIR, 2, 2, 1), bytes([1, 2, 3, 4]), 0)
    assert nir8.tolist() == [[1, 2], [3, 4]]
    nir16 = to_pixels(FrameSpec(Kind.NIR, 2, 1, 2), np.array([1, 256], "<u2").tobytes(), 0)
    assert nir16.dtype == np.uint16 and nir16.tolist() == [[16, 4096]]
    psii = to_pixels(FrameSpec(Kind.PSII, 2, 1, 2), np.array([3, 5], "<u2").tobytes(), 0)
    assert psii.tolist() == [[12, 20]]


def test_rotate_flip_type_turns_the_picture() -> None:
    spec = FrameSpec(Kind.NIR, 2, 2, 1)
    assert to_pixels(spec, bytes([1, 2, 3, 4]), 1).tolist() == [[4, 3], [2, 1]]
    vis = FrameSpec(Kind.VIS, 4, 2, 1)
    data = bytes(range(8))
    straight = to_pixels(vis, data, 0)
    assert to_pixels(vis, data, 3).tolist() == straight[::-1, ::-1].tolist()


@pytest.mark.parametrize("size", [0, 7, 9, 48 * 2])
def test_a_frame_of_the_wrong_size_is_corrupt(size: int) -> None:
    spec = FrameSpec(Kind.VIS, 8, 6, 1)
    with pytest.raises(ImageError, match=f"holds {size} bytes.*VIS 8x6 8-bit frame is 48") as err:
        to_pixels(spec, bytes(size), 0)
    assert err.value.kind == "corrupt"
