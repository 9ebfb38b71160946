"""Raw LemnaTec frames into pictures, as Danforth's extractor gives them to PlantCV.

- VIS: an 8-bit Bayer mosaic, demosaicked to 8-bit RGB by OpenCV's bilinear ``COLOR_BayerRG2*``,
  the conversion that extractor makes (it asks for BGR; PNG stores RGB). "RG" is OpenCV's naming:
  the second row's second and third pixels are red and green, so each 2x2 block of the sensor
  reads ``B G / G R``. Inside the one-pixel border each pixel is the rounded mean of the nearest
  samples of its colours; the border pixels are OpenCV's (copied from their inner neighbours).
- NIR: 8-bit grey as it is (``dataformat`` 0), or 12 significant bits in 16 (``dataformat`` 4)
  scaled x16 to use the 16-bit range; PSII: 14 significant bits scaled x4. Scaling saturates at
  the top of the range instead of wrapping round as the extractor's ``np.multiply`` did.
- ``rotate_flip_type`` other than 0 means the camera was mounted upside down: rotate 180 degrees.
- A frame whose byte count is not what its camera's configured size needs is corrupt.
"""

from __future__ import annotations

from typing import cast

import cv2
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
    """The picture turned half a turn (rows and columns reversed), as a contiguous array.

    OpenCV's rotation, 1 ms for a 5 MP RGB picture where numpy's reversed copy takes 33 ms.
    """
    return cast("Pixels", cv2.rotate(pixels, cv2.ROTATE_180))


def bayer_rg_to_rgb(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Bilinear demosaic of a ``B G / G R`` mosaic (OpenCV's "Bayer RG") into (h, w, 3) RGB."""
    if raw.ndim != 2 or raw.shape[0] < 2 or raw.shape[1] < 2:
        raise ValueError("a Bayer mosaic is a 2-D array of at least 2x2 pixels")
    return np.asarray(cv2.cvtColor(raw, cv2.COLOR_BayerRG2RGB), dtype=np.uint8)
