"""Transfer backends: move a batch of cache files to the destination as one task.

``local`` copies on this machine (the embedded default); ``globus`` drives Globus Transfer. Both
implement :class:`~consumers.transfer.base.TransferBackend`.
"""

from consumers.transfer.base import (
    FileOutcome,
    TaskState,
    TaskStatus,
    TransferBackend,
    TransferError,
    TransferItem,
    TransferNotFoundError,
    TransferPermanentError,
    TransferTransientError,
)

__all__ = [
    "FileOutcome",
    "TaskState",
    "TaskStatus",
    "TransferBackend",
    "TransferError",
    "TransferItem",
    "TransferNotFoundError",
    "TransferPermanentError",
    "TransferTransientError",
]
