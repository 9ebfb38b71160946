"""LemnaTec image blobs on disk: where each one is, and its raw frame.

The LemnaTec server stores every tile's image as ``<blob root>/<database>/<YYYY-MM-DD of the
snapshot>/blob<raw_image_oid>``: a zip archive whose member ``data`` holds the raw pixels. A blob
that is absent is ``missing``; one that is not a readable zip with that member is ``corrupt``.
Both are :class:`ImageError`, so the image becomes a dead letter and the snapshot goes on. Any
other read error (an unmounted or failing blob store) is transient: nothing is dead-lettered and
the snapshot is tried again, since a store that is away would otherwise make every image missing.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from datetime import datetime
from pathlib import Path
from typing import cast

from isal import isal_zlib

from producers.danforth.errors import BlobStoreError, ImageError

MEMBER = "data"
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local file header (30 bytes)
# What a blob that is no readable zip raises (ISA-L's error is typed loosely by its stubs).
UNREADABLE: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    cast("type[BaseException]", isal_zlib.IsalError),
    EOFError,
    NotImplementedError,
)


def blob_path(root: Path, database: str, taken: datetime, oid: int) -> Path:
    """Where the blob of image ``oid`` of a snapshot taken at ``taken`` is stored."""
    return root / database / taken.strftime("%Y-%m-%d") / f"blob{oid}"


def read_frame(path: Path) -> bytes:
    """The raw frame held in the blob at ``path`` (its zip member ``data``).

    A deflated member (what the LemnaTec server writes) is inflated with ISA-L, two to three
    times faster than zlib on a 5 MB frame, and checked against its length and CRC as zipfile
    checks them; any other member is read by zipfile itself.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(MEMBER)
            if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 1:
                return archive.read(MEMBER)  # stored, another method, or encrypted (refused)
        return _inflated(path, info)
    except FileNotFoundError:
        raise ImageError("missing", f"blob {path} is missing") from None
    except IsADirectoryError:
        raise ImageError("corrupt", f"blob {path} is a directory") from None
    except KeyError:
        raise ImageError("corrupt", f"blob {path} has no member {MEMBER!r}") from None
    except UNREADABLE as exc:
        raise ImageError("corrupt", f"blob {path} is not a readable zip: {exc}") from None
    except OSError as exc:
        raise BlobStoreError(f"blob {path} cannot be read now: {exc}") from exc


def _inflated(path: Path, info: zipfile.ZipInfo) -> bytes:
    """The deflated member ``info`` of the zip at ``path``, inflated and checked."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(LOCAL_HEADER.size)
        if len(header) != LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"member {MEMBER!r} has no local header")
        name_length, extra_length = LOCAL_HEADER.unpack(header)[-2:]
        fh.seek(info.header_offset + LOCAL_HEADER.size + name_length + extra_length)
        compressed = fh.read(info.compress_size)
    data = isal_zlib.decompress(compressed, wbits=-15)
    if len(data) != info.file_size or isal_zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"member {MEMBER!r} fails its length or CRC check")
    return bytes(data)


def check_store(root: Path, database: str) -> None:
    """Raise ``BlobStoreError`` unless the database's blob directory is there to read from."""
    if not (root / database).is_dir():
        raise BlobStoreError(f"blob directory {root / database} is not there (store not mounted?)")
