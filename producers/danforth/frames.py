"""Raw LemnaTec frames into pictures, as Danforth's extractor gives them to PlantCV (pure numpy).

- VIS: an 8-bit Bayer mosaic, demosaicked to 8-bit RGB by bilinear interpolation (what OpenCV's
  ``COLOR_BayerRG2BGR``, used by that extractor, does). "RG" is OpenCV's naming: the second row's
  second and third pixels are red and green, so each 2x2 block of the sensor reads ``B G / G R``.
- NIR: 8-bit grey as it is (``dataformat`` 0), or 12 significant bits in 16 (``dataformat`` 4)
  scaled x16 to use the 16-bit range; PSII: 14 significant bits scaled x4. Scaling saturates at
  the top of the range instead of wrapping round as the extractor's ``np.multiply`` did.
- ``rotate_flip_type`` other than 0 means the camera was mounted upside down: rotate 180 degrees.
- A frame whose byte count is not what its camera's configured size needs is corrupt.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from producers.danforth.cameras import FrameSpec, Kind
from producers.danforth.errors import ImageError

Pixels = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
SCALE = {Kind.NIR: 16, Kind.PSII: 4}


def check_size(spec: FrameSpec, data: bytes) -> None:
    """Raise ``ImageError`` (corrupt) unless ``data`` is exactly one frame of ``spec``."""
    if len(data) != spec.expected_bytes:
        raise ImageError(
            "corrupt",
            f"frame holds {len(data)} bytes; a {spec.describe()} frame is {spec.expected_bytes}",
        )


def to_pixels(spec: FrameSpec, data: bytes, rotate_flip_type: int | None) -> Pixels:
    """The picture of one raw frame: (h, w, 3) uint8 for VIS, (h, w) uint8 or uint16 for grey."""
    check_size(spec, data)
    shape = (spec.height, spec.width)
    pixels: Pixels
    if spec.bytes_per_pixel == 1:
        raw8 = np.frombuffer(data, dtype=np.uint8).reshape(shape)
        pixels = bayer_rg_to_rgb(raw8) if spec.kind is Kind.VIS else raw8
    else:
        raw16 = np.frombuffer(data, dtype="<u2").reshape(shape)
        pixels = scale_16(raw16, SCALE[spec.kind])
    return rotate_180(pixels) if rotate_flip_type else pixels


def scale_16(raw: npt.NDArray[np.uint16], factor: int) -> npt.NDArray[np.uint16]:
    """``raw`` x ``factor``, saturating at 65535 (a value above the sensor's range stays white)."""
    scaled: npt.NDArray[np.uint32] = raw.astype(np.uint32) * np.uint32(factor)
    return np.minimum(scaled, 0xFFFF).astype(np.uint16)


def rotate_180(pixels: Pixels) -> Pixels:
    """The picture turned half a turn (rows and columns reversed), as a contiguous array."""
    return pixels[::-1, ::-1].copy()


def bayer_rg_to_rgb(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Bilinear demosaic of a ``B G / G R`` mosaic (OpenCV's "Bayer RG") into (h, w, 3) RGB.

    Each colour's samples are placed on a zero plane and spread with the usual bilinear kernels
    (``[1 2 1] x [1 2 1] / 4`` for red and blue, the cross ``/ 4`` for green). The borders are
    mirrored without repeating the edge, which keeps the mosaic's parity, so a uniform colour
    comes back uniform everywhere.
    """
    if raw.ndim != 2 or raw.shape[0] < 2 or raw.shape[1] < 2:
        raise ValueError("a Bayer mosaic is a 2-D array of at least 2x2 pixels")
    h, w = raw.shape
    rows = np.arange(h)[:, None] % 2
    cols = np.arange(w)[None, :] % 2
    samples = raw.astype(np.uint16)
    red = np.where((rows == 1) & (cols == 1), samples, 0).astype(np.uint16)
    blue = np.where((rows == 0) & (cols == 0), samples, 0).astype(np.uint16)
    green = np.where(rows != cols, samples, 0).astype(np.uint16)
    out = np.empty((h, w, 3), dtype=np.uint8)
    out[..., 0] = _spread_box(red)
    out[..., 1] = _spread_cross(green)
    out[..., 2] = _spread_box(blue)
    return out


def _spread_box(plane: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint8]:
    """``[1 2 1]`` both ways, / 4: one sample per 2x2 block spread over the block's neighbours."""
    p = np.pad(plane, 1, mode="reflect")
    across: npt.NDArray[np.uint16] = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    down: npt.NDArray[np.uint16] = across[:-2] + 2 * across[1:-1] + across[2:]
    return ((down + 2) // 4).astype(np.uint8)


def _spread_cross(plane: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint8]:
    """The cross kernel / 4: green samples (half the sites) spread to their four neighbours."""
    p = np.pad(plane, 1, mode="reflect")
    total: npt.NDArray[np.uint16] = (
        4 * p[1:-1, 1:-1] + p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
    )
    return ((total + 2) // 4).astype(np.uint8)
