"""The Danforth producer's errors: a bad image is permanent (dead letter), a lost database transient."""

from __future__ import annotations

from terra_xfer.errors import PermanentError, TerraXferError, TransientError


class DanforthError(TerraXferError):
    """Root of the errors the Danforth producer raises."""


class ImageError(DanforthError, PermanentError):
    """One image of a snapshot cannot be made; ``reason`` is the dead letter's sentence.

    ``kind`` is a bounded class for metrics: ``missing``, ``corrupt`` or ``unsupported``.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class LemnaTecUnavailableError(DanforthError, TransientError):
    """The LemnaTec database cannot be reached now; the next poll tries again."""


class LemnaTecQueryError(DanforthError, PermanentError):
    """The database refused a query (wrong schema, no permission): a person must look."""


class BlobStoreError(DanforthError, TransientError):
    """The blob store cannot be read now (not mounted, I/O error); the snapshot is tried again."""


class CacheWriteError(DanforthError, TransientError):
    """A file cannot be written into the Danforth cache now (disk full?); tried again later."""
