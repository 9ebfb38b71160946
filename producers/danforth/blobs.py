"""LemnaTec image blobs on disk: where each one is, and its raw frame.

The LemnaTec server stores every tile's image as ``<blob root>/<database>/<YYYY-MM-DD of the
snapshot>/blob<raw_image_oid>``: a zip archive whose member ``data`` holds the raw pixels. A blob
that is absent is ``missing``; one that is not a readable zip with that member is ``corrupt``.
Both are :class:`ImageError`, so the image becomes a dead letter and the snapshot goes on. Any
other read error (an unmounted or failing blob store) is transient: nothing is dead-lettered and
the snapshot is tried again, since a store that is away would otherwise make every image missing.
"""

from __future__ import annotations

import zipfile
import zlib
from datetime import datetime
from pathlib import Path

from producers.danforth.errors import BlobStoreError, ImageError

MEMBER = "data"


def blob_path(root: Path, database: str, taken: datetime, oid: int) -> Path:
    """Where the blob of image ``oid`` of a snapshot taken at ``taken`` is stored."""
    return root / database / taken.strftime("%Y-%m-%d") / f"blob{oid}"


def read_frame(path: Path) -> bytes:
    """The raw frame held in the blob at ``path`` (its zip member ``data``)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(MEMBER) as member:
            return member.read()
    except FileNotFoundError:
        raise ImageError("missing", f"blob {path} is missing") from None
    except IsADirectoryError:
        raise ImageError("corrupt", f"blob {path} is a directory") from None
    except KeyError:
        raise ImageError("corrupt", f"blob {path} has no member {MEMBER!r}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ImageError("corrupt", f"blob {path} is not a readable zip: {exc}") from None
    except OSError as exc:
        raise BlobStoreError(f"blob {path} cannot be read now: {exc}") from exc


def check_store(root: Path, database: str) -> None:
    """Raise ``BlobStoreError`` unless the database's blob directory is there to read from."""
    if not (root / database).is_dir():
        raise BlobStoreError(f"blob directory {root / database} is not there (store not mounted?)")
