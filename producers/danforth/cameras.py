"""Camera kinds and frame sizes: what a tile's raw bytes must be (pure, no I/O).

The LemnaTec database does not hold frame sizes: they belong to the camera configuration and are
given in ``[danforth] cameras`` as ``PREFIX=WIDTHxHEIGHT`` per camera label prefix, the longest
matching prefix winning (``VIS_TV=...`` beside ``VIS=...``). The kind decides the decoding, as
Danforth's own extractor does: labels starting ``VIS`` are 8-bit Bayer mosaics, ``NIR`` 8-bit
(``dataformat`` 0) or 16-bit (``dataformat`` 4) grey, anything else PSII fluorescence, 16-bit grey.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from producers.danforth.errors import ImageError
from terra_xfer.errors import ConfigError

NIR_8BIT = 0
NIR_16BIT = 4
_ENTRY = re.compile(r"\s*([^=\s]+)\s*=\s*(\d+)\s*[xX]\s*(\d+)\s*")


class Kind(StrEnum):
    """How a camera's raw frame is turned into a picture."""

    VIS = "VIS"
    NIR = "NIR"
    PSII = "PSII"


@dataclass(frozen=True)
class FrameSpec:
    """What one raw frame holds: kind, size and bytes per pixel (1 or 2, little-endian)."""

    kind: Kind
    width: int
    height: int
    bytes_per_pixel: int

    @property
    def expected_bytes(self) -> int:
        return self.width * self.height * self.bytes_per_pixel

    def describe(self) -> str:
        return f"{self.kind} {self.width}x{self.height} {8 * self.bytes_per_pixel}-bit"


def kind_of(label: str) -> Kind:
    """The kind of a camera label, from its first ``_``-separated token."""
    first = label.split("_", 1)[0].upper()
    if first == "VIS":
        return Kind.VIS
    if first == "NIR":
        return Kind.NIR
    return Kind.PSII


class Cameras:
    """Frame sizes by camera label prefix, parsed once from the configuration."""

    def __init__(self, entries: Sequence[str]) -> None:
        sizes: dict[str, tuple[int, int]] = {}
        for entry in entries:
            match = _ENTRY.fullmatch(entry)
            if match is None or int(match[2]) < 2 or int(match[3]) < 2:
                raise ConfigError(
                    f"danforth.cameras entry {entry!r} is not PREFIX=WIDTHxHEIGHT (each at least 2)"
                )
            sizes[match[1].upper()] = (int(match[2]), int(match[3]))
        # Longest prefix first, so the most specific entry wins.
        self._sizes = sorted(sizes.items(), key=lambda item: -len(item[0]))

    def size_of(self, label: str) -> tuple[int, int] | None:
        """(width, height) of the longest configured prefix of ``label``, else of its kind."""
        upper = label.upper()
        for prefix, size in self._sizes:
            if upper.startswith(prefix):
                return size
        kind = str(kind_of(label))
        return next((size for prefix, size in self._sizes if prefix == kind), None)

    def spec(self, label: str, dataformat: int | None) -> FrameSpec:
        """The frame a tile of ``label`` holds; ``ImageError`` when it cannot be decoded."""
        kind = kind_of(label)
        size = self.size_of(label)
        if size is None:
            raise ImageError("unsupported", f"no frame size is configured for camera {label!r}")
        if kind is Kind.VIS:
            depth = 1
        elif kind is Kind.NIR:
            if dataformat not in (NIR_8BIT, NIR_16BIT):
                raise ImageError(
                    "unsupported", f"NIR camera {label!r} has unknown dataformat {dataformat}"
                )
            depth = 1 if dataformat == NIR_8BIT else 2
        else:
            depth = 2
        return FrameSpec(kind, size[0], size[1], depth)
