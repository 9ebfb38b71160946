"""The interface every catalog backend offers, and the values it speaks in.

The ingest stage hands a backend one :class:`IngestItem` per transferred file. The backend files it
under the TERRA-REF hierarchy (sensor → year → month → day collections, then one dataset per
capture) and answers with the catalog ids. Ingest is idempotent: a replayed item finds what the
first run made and adds nothing, and says so with ``created=False``.

A backend does not wait and retry by itself: a transient failure is answered at once, and the
stage tries that item again on its own schedule (backoff with jitter), so no call blocks a stage's
stop for long. A remote backend may hold its requests back while the catalog keeps failing
(:class:`CatalogUnavailable`); the stage then waits, without counting it as an attempt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from terra_xfer.errors import PermanentError, TerraXferError, TransientError


class CatalogError(TerraXferError):
    """Root of the errors a catalog backend raises."""


class CatalogTransientError(CatalogError, TransientError):
    """The catalog is busy or unreachable (500/502/503/504, reset, timeout, locked); retry later."""


class CatalogUnavailable(CatalogTransientError):
    """The request was not sent: the backend's circuit breaker holds requests back while the
    catalog keeps failing. ``retry_after`` is how long, in seconds, until it lets one through."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class CatalogPermanentError(CatalogError, PermanentError):
    """The catalog refused the request; retrying will not help.

    ``reason`` says what was refused and what the catalog answered (with the HTTP status, when
    there was one), so the dead-letter record explains itself; ``status`` is that HTTP status.
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class CatalogNameError(CatalogPermanentError):
    """The item cannot be named in the hierarchy (bad date, empty sensor, path separator)."""


@dataclass(frozen=True)
class IngestItem:
    """One transferred file to register.

    ``collections`` runs outermost first. ``as_dataset_metadata`` marks a ``*_metadata.json``:
    its JSON content is attached to the dataset as JSON-LD and it is not added as a file; the
    content comes from ``dataset_metadata`` when the caller read it already, else from
    ``file_path`` (a file that holds no JSON object is added as a file after all, see
    :class:`UnreadableMetadata`). ``dataset_metadata`` on an ordinary file is attached to the
    dataset before the file; ``file_metadata`` is attached to the file itself.
    """

    key: str
    dataset_name: str
    collections: tuple[str, ...]
    file_path: str
    file_name: str
    size: int
    checksum: str | None
    as_dataset_metadata: bool
    file_metadata: Mapping[str, Any] | None = None
    dataset_metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class IngestResult:
    """Where the item landed; ``created`` is False when nothing new was added (a replay).

    ``warning`` says what was registered differently from the usual way and why (a
    ``*_metadata.json`` that could not be read, filed as a file with a note on its dataset):
    the item is in the catalog, but a person may want to look at it.
    """

    dataset_id: str
    file_id: str | None
    collection_ids: tuple[str, ...]
    created: bool
    warning: str | None = None


@dataclass(frozen=True)
class UnreadableMetadata:
    """A ``*_metadata.json`` whose bytes are not a JSON object (cut short, corrupt, not UTF-8).

    Its content cannot be attached to the dataset, but the file was transferred and must not
    vanish from the catalog: it is registered as an ordinary file of its dataset, and the
    dataset gets a note saying which file could not be read and why.
    """

    file_name: str
    reason: str

    @property
    def warning(self) -> str:
        """The warning the file's state carries: what could not be read, and what was done."""
        return (
            f"metadata {self.file_name} could not be read ({self.reason});"
            " registered as a file of its dataset"
        )


# What became of one item: its result, the permanent error that refused it, or the transient
# error that stopped it this time (it may be tried again).
Outcome = IngestResult | PermanentError | TransientError


class Catalog(Protocol):
    """What the ingest stage needs from a catalog."""

    name: str

    def ingest(self, item: IngestItem) -> IngestResult:
        """Register the item under its hierarchy; a replay returns the same ids, created=False.
        Errors are raised, transient ones at once (no retry inside)."""
        ...

    def ingest_many(self, items: Sequence[IngestItem]) -> Sequence[Outcome]:
        """Register every item, in order, each with its own outcome. A transient error that
        concerns the whole call (a locked database) may instead be raised: then no item is
        registered, and all of them may be tried again (a replay is harmless)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def ingest_each(catalog: Catalog, items: Sequence[IngestItem]) -> list[Outcome]:
    """``ingest_many`` for a catalog that registers one item per call: each item's outcome."""
    outcomes: list[Outcome] = []
    for item in items:
        try:
            outcomes.append(catalog.ingest(item))
        except (PermanentError, TransientError) as exc:
            outcomes.append(exc)
    return outcomes


def dataset_metadata_content(item: IngestItem) -> Mapping[str, Any] | UnreadableMetadata:
    """The JSON object a metadata item attaches to its dataset: given, or read from its file.

    A file whose bytes are not a JSON object is :class:`UnreadableMetadata` (the caller files it
    as an ordinary file). A file that is missing or cannot be opened is a permanent error: that
    is no fault of its content, and the same file read again gives the same answer.
    """
    if item.dataset_metadata is not None:
        return item.dataset_metadata
    try:
        with open(item.file_path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CatalogPermanentError(f"cannot read metadata {item.file_path}: {exc}") from exc
    content = parse_metadata(data)
    if isinstance(content, str):
        return UnreadableMetadata(item.file_name, content)
    return content


def parse_metadata(data: bytes) -> dict[str, Any] | str:
    """The JSON object ``data`` holds, or why it holds none (a short, stable sentence: the same
    bytes always give the same reason, so a replay finds the note the first run attached).

    A UTF-8 byte-order mark (as some Windows tools write) is allowed; ``NaN`` and ``Infinity``,
    which Python reads but JSON does not have (a catalog would refuse them), are not.
    """
    try:
        content = json.loads(data.decode("utf-8-sig"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc}"
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    except _NotJson as exc:
        return f"not JSON: {exc}"
    except RecursionError:
        return "not JSON: nested too deeply to read"
    if not isinstance(content, dict):
        return f"a JSON {_json_kind(content)}, not an object"
    return content


class _NotJson(ValueError):
    """A value Python's reader accepts that JSON has not."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _json_kind(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "array" if isinstance(value, list) else "string"
