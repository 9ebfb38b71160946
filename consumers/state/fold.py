"""The file state machine: folds one file's events into its FileState record (pure, no I/O).

``ARRIVED → BATCHED → TRANSFERRED → INGESTED and DELETED → DONE``; a transfer attempt that fails
is ``FAILED`` (retried), a final failure ``QUARANTINED`` for a person; a logged file that was not
in the cache is ``MISSING``. The state keeper calls :func:`fold` per file event and
:func:`batched` per file of a batch, and writes the result to files.state; ``None`` means the
event changes nothing, so nothing is written. What each event does is in
:mod:`consumers.state.transitions`.

Rules (each makes the result independent of delivery order and of duplicates):

- Versions ``"<size>:<mtime_ns>"`` are ordered by ``(mtime_ns, size)``: the newest modification
  wins, and on equal mtimes the larger size (a file still being appended). An event of an older
  version than the record's is ignored. An event of a newer version starts the record afresh
  (state ``ARRIVED``, flags cleared) and pushes the old version onto ``previous_versions`` (last
  10 kept); the history of the old version is kept.
- Any event may be the first one seen for a version: the record is then built from the key and
  version, and the FileArrived, when it comes, fills in sensor, date and the arrival time.
- A FileMissing (the producer found no file where the log said one was uploaded) gives a file
  that has no record a MISSING one: version ``0:0`` (:data:`MISSING_VERSION`, below every real
  version), the producer's reason, sensor and date from the path. A later FileMissing of a
  MISSING record takes its reason. A file that has any other record is not moved by it: the event
  is recorded once in its history, as evidence. Any event of a real version supersedes a MISSING
  record as a newer version does (its trail kept, ``0:0`` not listed among previous versions).
- Transfer progress of one version is ranked by ``(attempt, phase)`` with phases BATCHED < FAILED <
  QUARANTINED; an event applies only if it ranks above the record, so a late or repeated event of
  an earlier attempt changes nothing. A FileTransferred overrides all of them; one folded after
  the file's ingestion or deletion (read late) moves nothing but is recorded once, as evidence. A batch that comes
  too late to change the record (after its transfer or its failure was folded, as a keeper that
  takes over a partition with a backlog may read them) is still recorded once, as evidence: the
  history always shows the batch that carried the file.
- Ingestion and deletion are flags (``ingested``, ``deleted``) that may arrive in any order. Any
  ingester or deleter event proves the version reached the destination (both stages consume
  files.transferred), so it moves the record past TRANSFERRED even before the FileTransferred is
  folded. Past TRANSFERRED the state is derived from the flags: DONE needs both.
- Deleter outcomes: DELETED and ALREADY_GONE set ``deleted``; REFUSED records the reason; DRY_RUN
  only records evidence, so in dry-run mode files stop at INGESTED.
- An ingest failure does not quarantine: the bytes are safe at the destination, so the state
  stays TRANSFERRED (or DELETED) and ``reason`` says why the file waits for the catalog. A
  non-final one (ingest retries it) shows ``"ingest: <reason> (attempt N, retrying)"``, the
  highest attempt folded; a final one ``"ingest: <reason>"``, which no non-final one replaces.
  A later FileIngested clears either.
- A FileIngested may carry a ``warning`` (the catalog registered the file, but not the usual
  way: a ``*_metadata.json`` that could not be read became a file with a note on its dataset).
  It is kept in the record's ``warning``, apart from ``reason``: the file is in the catalog, so
  it goes on to DONE; the warning stays for a person to see until a newer version replaces it.
- ``reason`` names its stage (``transfer: ``, ``ingest: ``, ``delete refused: ``) and is cleared
  when that stage succeeds. An ingest reason outranks a refusal, whichever is folded first, and
  when the file is then ingested (not deleted) the last refusal of its version shows again;
  between two different refusals the last one folded is shown (both stay in the history).
- Every change appends a Transition (event time, evidence); the history keeps the last 50.
  An event that only adds evidence (refusal, dry run, ingest failure, a FileMissing of a known
  file) is recorded once; a non-final ingest failure once per distinct reason, not per attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from consumers.state.transitions import (
    MISSING,
    STEPS,
    Step,
    arrival_ms,
    batch_step,
    fields_of,
    recorded,
)
from consumers.state.transitions import transferred as transferred
from schemas.codec import current_schemas
from schemas.writer import EncodedItems, Remembered
from terra_xfer.errors import PermanentError

State = dict[str, Any]
Event = Mapping[str, Any]

HISTORY_LIMIT = 50
PREVIOUS_VERSIONS_LIMIT = 10
IN_FLIGHT = frozenset({"BATCHED", "FAILED"})
MISSING_VERSION = "0:0"  # the version of a MISSING record: no content was seen
# Nothing more happens to such a version on its own: DONE (copied, catalogued, gone from the
# cache) or MISSING (never in the cache).
SETTLED = frozenset({"DONE", MISSING})


def _file_states() -> tuple[str, ...]:
    """The states a file can be in: the symbols of FileState's ``state`` enum (the schema is
    their one definition)."""
    (kind,) = [
        f["type"] for f in current_schemas()["FileState"].schema["fields"] if f["name"] == "state"
    ]
    return tuple(kind["symbols"])


FILE_STATES = _file_states()
# Every state but the settled ones: the files something still happens to.
UNSETTLED = tuple(s for s in FILE_STATES if s not in SETTLED)
_UNTOUCHED: dict[str, Any] = {
    "state": "ARRIVED",
    "ingested": False,
    "deleted": False,
    "attempts": 0,
    "reason": None,
    "task_id": None,
    "checksum": None,
    "dataset_id": None,
    "file_id": None,
    "warning": None,
}


class StateFoldError(PermanentError):
    """An event cannot be folded (unknown record type, malformed version)."""


def parse_version(version: str) -> tuple[int, int]:
    """``(mtime_ns, size)`` of a ``"<size>:<mtime_ns>"`` version: the key that orders versions."""
    size, sep, mtime = version.partition(":")
    try:
        if not sep:
            raise ValueError(version)
        return int(mtime), int(size)
    except ValueError:
        raise StateFoldError(
            f"malformed version {version!r} (expected '<size>:<mtime_ns>')"
        ) from None


def is_newer(version: str, than: str) -> bool:
    """True when ``version`` supersedes ``than``."""
    return parse_version(version) > parse_version(than)


def is_transferred(state: Mapping[str, Any] | None, version: str) -> bool:
    """True when ``version`` is already at the destination: the batcher must not send it again."""
    return state is not None and state["version"] == version and transferred(state)


def is_in_flight(state: Mapping[str, Any] | None, version: str) -> bool:
    """True when ``version`` is in a batch or waiting for its retry."""
    return state is not None and state["version"] == version and state["state"] in IN_FLIGHT


def needs_requeue(state: Mapping[str, Any] | None, version: str) -> bool:
    """True when the sweeper should announce ``version``: unknown, newer, never batched, or a
    file recorded MISSING that is in the cache after all.

    A version that is batched, failed, quarantined (a person's call) or transferred is not.
    """
    if state is None or state["state"] == MISSING:
        return True
    if state["version"] != version:
        return is_newer(version, state["version"])
    return bool(state["state"] == "ARRIVED")


def settled_before(state: Mapping[str, Any], cutoff_ms: int) -> bool:
    """True when ``state`` is settled and unchanged since before ``cutoff_ms``: the record a
    stage's local copy may let go (files.state and the status index keep it)."""
    return state["state"] in SETTLED and int(state["updated_ms"]) < cutoff_ms


def fold(state: State | None, record_name: str, event: Event, now_ms: int) -> State | None:
    """The record after ``event`` (a decoded ``record_name``), or None when nothing changes.

    BatchSubmitted is keyed by batch, not by file: it yields None; use :func:`batched` per file.
    """
    if record_name == "BatchSubmitted":
        return None
    if record_name == "FileMissing":
        return _missing(state, event, now_ms)
    step = STEPS.get(record_name)
    if step is None:
        raise StateFoldError(f"no file state transition for record {record_name!r}")
    if record_name == "FileArrived":
        meta = _arrival_meta(event)
        arrived_ms = arrival_ms(event)
    else:
        meta = _stub_meta(event["key"], event["version"], event)
        arrived_ms = event["emitted_ms"]
    return _advance(
        state,
        event["version"],
        meta,
        arrived_ms,
        event["emitted_ms"],
        now_ms,
        lambda s: step(s, event),
    )


def batched(
    state: State | None,
    batch_file: Event,
    batch_id: str,
    task_id: str | None,
    now_ms: int,
    *,
    emitted_ms: int | None = None,
) -> State | None:
    """The record after one file (a BatchFile) of a batch was submitted, or None if unchanged.

    ``task_id`` is None for a PREPARED batch; the SUBMITTED one then fills it in. ``emitted_ms``
    is the BatchSubmitted's time, recorded as the transition time (``now_ms`` when not given).
    """
    at_ms = now_ms if emitted_ms is None else emitted_ms
    meta = _stub_meta(batch_file["key"], batch_file["version"], batch_file)
    return _advance(
        state,
        batch_file["version"],
        meta,
        at_ms,
        at_ms,
        now_ms,
        lambda s: batch_step(s, batch_file, batch_id, task_id),
    )


def _missing(state: State | None, event: Event, now_ms: int) -> State | None:
    """A FileMissing: a MISSING record for a file without one (or with a MISSING one only);
    evidence, recorded once, on any other record."""
    at_ms = arrival_ms(event)
    evidence = fields_of(event, "event_id", "source", "source_ref", "logged_size", "reason")
    if state is not None and state["state"] != MISSING:
        step = Step(MISSING, evidence, evidence_only=True)
    else:
        changes = {"state": MISSING, "reason": event["reason"]}
        if state is not None:
            changes["arrived_ms"] = min(state["arrived_ms"], at_ms)
        step = Step(MISSING, evidence, changes, evidence_only=True)
    version = MISSING_VERSION if state is None else state["version"]
    meta = {name: event[name] for name in ("key", "site", "path", "sensor", "date")}
    meta |= {"size": 0, "mtime_ns": 0}
    return _advance(state, version, meta, at_ms, at_ms, now_ms, lambda _s: step)


def _advance(
    state: State | None,
    version: str,
    meta: dict[str, Any],
    arrived_ms: int,
    at_ms: int,
    now_ms: int,
    step_for: Callable[[State], Step | None],
) -> State | None:
    """Apply one step to the record of ``version`` (existing or fresh) and record its transition."""
    parse_version(version)
    if state is not None and state["version"] == version:
        base = state
    elif state is None or is_newer(version, state["version"]):
        base = _fresh(state, version, meta, arrived_ms)
    else:
        return None
    step = step_for(base)
    if step is None:
        return None
    # .get: a record kept by an earlier release may lack a field added since (``warning``).
    changed = any(base.get(name) != value for name, value in step.changes.items())
    seen = step.evidence_only and recorded(base, step)
    if base is state and not changed and (seen or not step.evidence_only):
        return None
    history = base["history"]
    if not (seen and step.varying):
        # Remembered: written with every later state of the file, it is encoded once.
        transition = Remembered(state=step.name, at_ms=at_ms, evidence=step.evidence)
        history = _appended(history, transition)
    return {**base, **step.changes, "history": history, "updated_ms": now_ms}


def _appended(history: Any, transition: Remembered) -> Any:
    """``history`` with ``transition`` at its end, the oldest dropped beyond ``HISTORY_LIMIT``.
    A history read back as bytes (:class:`EncodedItems`) stays bytes, undecoded, while it can."""
    if isinstance(history, EncodedItems) and len(history) < HISTORY_LIMIT:
        return history.plus(transition)
    return [*history, transition][-HISTORY_LIMIT:]


def _fresh(old: State | None, version: str, meta: dict[str, Any], arrived_ms: int) -> State:
    """A record in ARRIVED for a version not seen before, keeping the older versions' trail
    (a MISSING record's stand-in version is no version of the file, so it is not listed)."""
    previous: list[str] = []
    history: list[dict[str, Any]] = []
    if old is not None:
        previous = list(old["previous_versions"])
        if old["state"] != MISSING:
            previous = [*previous, old["version"]][-PREVIOUS_VERSIONS_LIMIT:]
        history = list(old["history"])
        for name in ("sensor", "date"):
            if meta[name] is None:
                meta = {**meta, name: old[name]}
    return {
        **meta,
        "version": version,
        **_UNTOUCHED,
        "arrived_ms": arrived_ms,
        "updated_ms": arrived_ms,
        "history": history,
        "previous_versions": previous,
    }


def _arrival_meta(event: Event) -> dict[str, Any]:
    names = ("key", "site", "path", "sensor", "date", "size", "mtime_ns")
    return {name: event[name] for name in names}


def _stub_meta(key: str, version: str, event: Event) -> dict[str, Any]:
    """What a non-arrival event tells about the file: key, site, path, size/mtime (from version)."""
    mtime_ns, size = parse_version(version)
    site, _, relative = key.partition("/")
    path = event.get("path", relative)
    meta = {"key": key, "site": site, "path": path, "sensor": None, "date": None}
    return meta | {"size": size, "mtime_ns": mtime_ns}
