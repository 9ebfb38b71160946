"""The file state machine: folds one file's events into its FileState record (pure, no I/O).

``ARRIVED → BATCHED → TRANSFERRED → INGESTED and DELETED → DONE``; a transfer attempt that fails
is ``FAILED`` (retried), a final failure ``QUARANTINED`` for a person. The state keeper calls
:func:`fold` per file event and :func:`batched` per file of a batch, and writes the result to
files.state; ``None`` means the event changes nothing, so nothing is written.

Rules (each makes the result independent of delivery order and of duplicates):

- Versions ``"<size>:<mtime_ns>"`` are ordered by ``(mtime_ns, size)``: the newest modification
  wins, and on equal mtimes the larger size (a file still being appended). An event of an older
  version than the record's is ignored. An event of a newer version starts the record afresh
  (state ``ARRIVED``, flags cleared) and pushes the old version onto ``previous_versions`` (last
  10 kept); the history of the old version is kept.
- Any event may be the first one seen for a version: the record is then built from the key and
  version, and the FileArrived, when it comes, fills in sensor, date and the arrival time.
- Transfer progress of one version is ranked by ``(attempt, phase)`` with phases BATCHED < FAILED <
  QUARANTINED; an event applies only if it ranks above the record, so a late or repeated event of
  an earlier attempt changes nothing. A FileTransferred overrides all of them. A batch that comes
  too late to change the record (after its transfer or its failure was folded, as a keeper that
  takes over a partition with a backlog may read them) is still recorded once, as evidence: the
  history always shows the batch that carried the file.
- Ingestion and deletion are flags (``ingested``, ``deleted``) that may arrive in any order. Any
  ingester or deleter event proves the version reached the destination (both stages consume
  files.transferred), so it moves the record past TRANSFERRED even before the FileTransferred is
  folded. Past TRANSFERRED the state is derived from the flags: DONE needs both.
- Deleter outcomes: DELETED and ALREADY_GONE set ``deleted``; REFUSED records the reason; DRY_RUN
  only records evidence, so in dry-run mode files stop at INGESTED.
- A final ingest failure does not quarantine: the bytes are safe at the destination, so the state
  stays TRANSFERRED (or DELETED) and ``reason`` says ``"ingest: ..."``; a later FileIngested
  clears it. Non-final ingest failures are recorded in the history only.
- ``reason`` names its stage (``transfer: ``, ``ingest: ``, ``delete refused: ``) and is cleared
  when that stage succeeds. An ingest reason outranks a refusal, whichever is folded first;
  between two different refusals the last one folded is shown (both stay in the history).
- Every change appends a Transition (event time, evidence); the history keeps the last 50.
  An event that only adds evidence (refusal, dry run, non-final ingest failure) is recorded once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from terra_xfer.errors import PermanentError

State = dict[str, Any]
Event = Mapping[str, Any]

HISTORY_LIMIT = 50
PREVIOUS_VERSIONS_LIMIT = 10
AFTER_TRANSFER = frozenset({"TRANSFERRED", "INGESTED", "DELETED", "DONE"})
IN_FLIGHT = frozenset({"BATCHED", "FAILED"})
TRANSFER_REASON = "transfer: "
INGEST_REASON = "ingest: "
DELETE_REASON = "delete refused: "
_PHASE = {"ARRIVED": -1, "BATCHED": 0, "FAILED": 1, "QUARANTINED": 2}
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
}


class StateFoldError(PermanentError):
    """An event cannot be folded (unknown record type, malformed version)."""


@dataclass(frozen=True)
class _Step:
    """What one event does to a record of its version: field changes and the transition."""

    name: str
    evidence: dict[str, str]
    changes: dict[str, Any] = field(default_factory=dict)
    evidence_only: bool = False


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


def transferred(state: Mapping[str, Any]) -> bool:
    """True when the record's version is known to be at the destination."""
    return bool(state["state"] in AFTER_TRANSFER or state["ingested"] or state["deleted"])


def is_transferred(state: Mapping[str, Any] | None, version: str) -> bool:
    """True when ``version`` is already at the destination: the batcher must not send it again."""
    return state is not None and state["version"] == version and transferred(state)


def is_in_flight(state: Mapping[str, Any] | None, version: str) -> bool:
    """True when ``version`` is in a batch or waiting for its retry."""
    return state is not None and state["version"] == version and state["state"] in IN_FLIGHT


def needs_requeue(state: Mapping[str, Any] | None, version: str) -> bool:
    """True when the sweeper should announce ``version``: unknown, newer, or never batched.

    A version that is batched, failed, quarantined (a person's call) or transferred is not.
    """
    if state is None:
        return True
    if state["version"] != version:
        return is_newer(version, state["version"])
    return bool(state["state"] == "ARRIVED")


def fold(state: State | None, record_name: str, event: Event, now_ms: int) -> State | None:
    """The record after ``event`` (a decoded ``record_name``), or None when nothing changes.

    BatchSubmitted is keyed by batch, not by file: it yields None; use :func:`batched` per file.
    """
    if record_name == "BatchSubmitted":
        return None
    step = _STEPS.get(record_name)
    if step is None:
        raise StateFoldError(f"no file state transition for record {record_name!r}")
    if record_name == "FileArrived":
        meta = _arrival_meta(event)
        arrived_ms = _arrival_ms(event)
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
        lambda s: _batch_step(s, batch_file, batch_id, task_id),
    )


def _advance(
    state: State | None,
    version: str,
    meta: dict[str, Any],
    arrived_ms: int,
    at_ms: int,
    now_ms: int,
    step_for: Callable[[State], _Step | None],
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
    changed = any(base[name] != value for name, value in step.changes.items())
    if base is state and not changed and (not step.evidence_only or _recorded(base, step)):
        return None
    transition = {"state": step.name, "at_ms": at_ms, "evidence": step.evidence}
    history = [*base["history"], transition][-HISTORY_LIMIT:]
    return {**base, **step.changes, "history": history, "updated_ms": now_ms}


def _fresh(old: State | None, version: str, meta: dict[str, Any], arrived_ms: int) -> State:
    """A record in ARRIVED for a version not seen before, keeping the older versions' trail."""
    previous: list[str] = []
    history: list[dict[str, Any]] = []
    if old is not None:
        previous = [*old["previous_versions"], old["version"]][-PREVIOUS_VERSIONS_LIMIT:]
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


def _arrival_ms(event: Event) -> int:
    """When the upload completed: the log's time when there is one, else when it was announced."""
    logged = event.get("logged_ms")
    return int(logged if logged is not None else event["emitted_ms"])


def _recorded(state: State, step: _Step) -> bool:
    return any(t["state"] == step.name and t["evidence"] == step.evidence for t in state["history"])


def _evidence(event: Event, *names: str) -> dict[str, str]:
    """The event's version and the named fields as strings (absent and null fields left out)."""
    evidence = {"version": str(event["version"])}
    for name in names:
        value = event.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            evidence[name] = "true" if value else "false"
        elif isinstance(value, list):
            evidence[name] = ",".join(str(v) for v in value)
        else:
            evidence[name] = str(value)
    return evidence


def _settled(ingested: bool, deleted: bool) -> str:
    """The state of a transferred version, from its flags."""
    if ingested and deleted:
        return "DONE"
    if ingested:
        return "INGESTED"
    return "DELETED" if deleted else "TRANSFERRED"


def _clear(reason: str | None, *stages: str) -> str | None:
    """``reason`` unless it belongs to one of ``stages`` (which have now succeeded)."""
    return None if reason is not None and reason.startswith(stages) else reason


def _rank(state: State) -> tuple[int, int]:
    return state["attempts"], _PHASE[state["state"]]


def _arrived(state: State, event: Event) -> _Step:
    changes = {
        "site": event["site"],
        "path": event["path"],
        "arrived_ms": min(state["arrived_ms"], _arrival_ms(event)),
    }
    changes |= {name: event[name] for name in ("sensor", "date") if event[name] is not None}
    evidence = _evidence(event, "event_id", "source", "source_ref")
    return _Step("ARRIVED", evidence, changes)


def _batch_step(
    state: State, batch_file: Event, batch_id: str, task_id: str | None
) -> _Step | None:
    attempt = int(batch_file["attempt"])
    evidence = _evidence(batch_file, "attempt", "dest_path") | {"batch_id": batch_id}
    if task_id is not None:
        evidence["task_id"] = task_id
    if transferred(state):
        return _Step("BATCHED", evidence, evidence_only=True)
    if (attempt, _PHASE["BATCHED"]) > _rank(state):
        changes = {"state": "BATCHED", "attempts": attempt, "task_id": task_id, "reason": None}
        return _Step("BATCHED", evidence, changes)
    if attempt == state["attempts"] and state["task_id"] is None and task_id is not None:
        return _Step("BATCHED", evidence, {"task_id": task_id})
    return _Step("BATCHED", evidence, evidence_only=True)


def _transfer_failed(state: State, event: Event) -> _Step | None:
    if transferred(state):
        return None
    name = "QUARANTINED" if event["final"] else "FAILED"
    attempt = int(event["attempt"])
    if (attempt, _PHASE[name]) <= _rank(state):
        return None
    task_id = event["task_id"]
    if task_id is None and attempt == state["attempts"]:
        task_id = state["task_id"]
    changes = {
        "state": name,
        "attempts": attempt,
        "reason": TRANSFER_REASON + event["reason"],
        "task_id": task_id,
    }
    fields = ("batch_id", "task_id", "backend", "reason", "attempt", "final", "retry_at_ms")
    return _Step(name, _evidence(event, *fields), changes)


def _transferred(state: State, event: Event) -> _Step:
    changes = {
        "state": _settled(state["ingested"], state["deleted"]),
        "task_id": event["task_id"],
        "checksum": event["checksum"],
        "attempts": max(state["attempts"], int(event["attempt"])),
        "reason": _clear(state["reason"], TRANSFER_REASON),
    }
    fields = ("batch_id", "task_id", "backend", "checksum", "checksum_algorithm")
    evidence = _evidence(event, *fields, "skipped_identical", "attempt")
    return _Step("TRANSFERRED", evidence, changes)


def _ingested(state: State, event: Event) -> _Step | None:
    if state["ingested"]:
        return None
    changes = {
        "state": _settled(True, state["deleted"]),
        "ingested": True,
        "dataset_id": event["dataset_id"],
        "file_id": event["file_id"],
        "reason": _clear(state["reason"], TRANSFER_REASON, INGEST_REASON),
    }
    fields = ("catalog", "dataset_id", "file_id", "collection_ids", "created")
    return _Step("INGESTED", _evidence(event, *fields), changes)


def _ingest_failed(state: State, event: Event) -> _Step | None:
    if state["ingested"]:
        return None
    reason = _clear(state["reason"], TRANSFER_REASON)
    if event["final"]:
        reason = INGEST_REASON + event["reason"]
    changes = {"state": _settled(False, state["deleted"]), "reason": reason}
    evidence = _evidence(event, "catalog", "reason", "attempt", "final")
    return _Step("INGEST_FAILED", evidence, changes, evidence_only=True)


def _deleted(state: State, event: Event) -> _Step | None:
    if state["deleted"]:
        return None
    outcome = event["outcome"]
    fields = ("outcome", "reason", "checksum", "destination_confirmed", "removed_dirs")
    evidence = _evidence(event, *fields)
    reason = _clear(state["reason"], TRANSFER_REASON)
    if outcome in ("DELETED", "ALREADY_GONE"):
        changes = {
            "state": _settled(state["ingested"], True),
            "deleted": True,
            "reason": _clear(reason, DELETE_REASON),
        }
        return _Step("DELETED", evidence, changes)
    if outcome == "REFUSED" and not (reason or "").startswith(INGEST_REASON):
        reason = DELETE_REASON + (event["reason"] or "no reason given")
    name = "DELETE_REFUSED" if outcome == "REFUSED" else "DELETE_DRY_RUN"
    changes = {"state": _settled(state["ingested"], False), "reason": reason}
    return _Step(name, evidence, changes, evidence_only=True)


_STEPS: dict[str, Callable[[State, Event], _Step | None]] = {
    "FileArrived": _arrived,
    "FileTransferred": _transferred,
    "FileTransferFailed": _transfer_failed,
    "FileIngested": _ingested,
    "FileIngestFailed": _ingest_failed,
    "FileDeleted": _deleted,
}
