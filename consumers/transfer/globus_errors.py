"""Where globus-sdk exceptions become terra-xfer errors.

429 and 5xx answers and network failures are transient (globus-sdk has already retried them); a
404 is :class:`TransferNotFoundError`; any other answer or SDK error is permanent. Messages name
the operation, the HTTP status, Globus's error code and message and its request id; they never
carry credentials (globus-sdk's own messages hold no headers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import globus_sdk

from consumers.transfer.base import (
    TransferError,
    TransferNotFoundError,
    TransferPermanentError,
    TransferTransientError,
)


@contextmanager
def globus_boundary(what: str) -> Iterator[None]:
    """Run a globus-sdk call, re-raising its exceptions as :class:`TransferError` subclasses."""
    try:
        yield
    except globus_sdk.GlobusAPIError as exc:
        raise api_error(what, exc) from exc
    except globus_sdk.NetworkError as exc:
        raise TransferTransientError(f"{what}: cannot reach Globus ({type(exc).__name__})") from exc
    except globus_sdk.GlobusError as exc:
        raise TransferPermanentError(f"{what}: {exc}") from exc


def api_error(what: str, exc: globus_sdk.GlobusAPIError) -> TransferError:
    """The terra-xfer error for one error answer from a Globus service."""
    status = exc.http_status
    message = f"{what}: Globus answered {status} {exc.code}: {exc.message}"
    if exc.request_id:
        message += f" (request {exc.request_id})"
    if status == 429 or status >= 500:
        return TransferTransientError(message, retry_after=_retry_after(exc))
    if status == 404:
        return TransferNotFoundError(message)
    return TransferPermanentError(message)


def _retry_after(exc: globus_sdk.GlobusAPIError) -> float | None:
    value = exc.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
