"""What each file event does to the record of its version: one pure step per record type.

:mod:`consumers.state.fold` picks the record of the event's version (the existing one or a fresh
one), applies the step given here and records its transition; the rules are listed in its
docstring. A step says which fields change and with what evidence, or None when the event cannot
apply to the record. The reason formats live here too, so the status index counts what the fold
writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

State = dict[str, Any]
Event = Mapping[str, Any]

AFTER_TRANSFER = frozenset({"TRANSFERRED", "INGESTED", "DELETED", "DONE"})
MISSING = "MISSING"
TRANSFER_REASON = "transfer: "
INGEST_REASON = "ingest: "
DELETE_REASON = "delete refused: "
_RETRYING = re.compile(r" \(attempt (\d+), retrying\)$")
_PHASE = {MISSING: -1, "ARRIVED": -1, "BATCHED": 0, "FAILED": 1, "QUARANTINED": 2}


@dataclass(frozen=True)
class Step:
    """What one event does to a record of its version: field changes and the transition.

    ``evidence_only``: the event does not move the record by itself, so its transition is
    recorded once. ``varying``: evidence keys that differ between repeats of one fact (a retry's
    attempt); a step naming some is recorded once per the rest of its evidence, even when it
    changes a field again.
    """

    name: str
    evidence: dict[str, str]
    changes: dict[str, Any] = field(default_factory=dict)
    evidence_only: bool = False
    varying: frozenset[str] = frozenset()


def recorded(state: State, step: Step) -> bool:
    """True when the record's history already holds ``step``'s transition."""
    drop = step.varying

    def fact(evidence: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in evidence.items() if k not in drop}

    wanted = fact(step.evidence)
    return any(t["state"] == step.name and fact(t["evidence"]) == wanted for t in state["history"])


def transferred(state: Mapping[str, Any]) -> bool:
    """True when the record's version is known to be at the destination."""
    return bool(state["state"] in AFTER_TRANSFER or state["ingested"] or state["deleted"])


def waiting_reason(reason: str, attempt: int) -> str:
    """The reason shown while ingest retries a file: ``ingest: <reason> (attempt N, retrying)``."""
    return f"{INGEST_REASON}{reason} (attempt {attempt}, retrying)"


def waiting_attempt(reason: str | None) -> int | None:
    """The attempt of a :func:`waiting_reason`; None for any other reason (or none)."""
    if reason is None or not reason.startswith(INGEST_REASON):
        return None
    match = _RETRYING.search(reason)
    return int(match.group(1)) if match else None


def reason_cause(reason: str) -> str:
    """``reason`` without the attempt of a waiting ingest reason, so files that wait on the same
    cause count together: ``ingest: 503 (attempt 4, retrying)`` → ``ingest: 503 (retrying)``."""
    if not reason.startswith(INGEST_REASON):
        return reason
    return _RETRYING.sub(" (retrying)", reason)


def evidence_of(event: Event, *names: str) -> dict[str, str]:
    """The event's version and the named fields as strings (absent and null fields left out)."""
    evidence = {"version": str(event["version"])}
    return evidence | fields_of(event, *names)


def fields_of(event: Event, *names: str) -> dict[str, str]:
    """The named fields of ``event`` as strings (absent and null fields left out)."""
    out: dict[str, str] = {}
    for name in names:
        value = event.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = str(value)
    return out


def arrival_ms(event: Event) -> int:
    """When the upload completed: the log's time when there is one, else when it was announced."""
    logged = event.get("logged_ms")
    return int(logged if logged is not None else event["emitted_ms"])


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


def arrived(state: State, event: Event) -> Step:
    changes = {
        "site": event["site"],
        "path": event["path"],
        "arrived_ms": min(state["arrived_ms"], arrival_ms(event)),
    }
    changes |= {name: event[name] for name in ("sensor", "date") if event[name] is not None}
    if state["state"] == MISSING:  # a version found at last (its version equals the stand-in)
        changes |= {"state": "ARRIVED", "reason": None}
    evidence = evidence_of(event, "event_id", "source", "source_ref")
    return Step("ARRIVED", evidence, changes)


def batch_step(state: State, batch_file: Event, batch_id: str, task_id: str | None) -> Step | None:
    """One file of a batch (PREPARED: no task id yet; SUBMITTED: with it)."""
    attempt = int(batch_file["attempt"])
    evidence = evidence_of(batch_file, "attempt", "dest_path") | {"batch_id": batch_id}
    if task_id is not None:
        evidence["task_id"] = task_id
    if transferred(state):
        return Step("BATCHED", evidence, evidence_only=True)
    if (attempt, _PHASE["BATCHED"]) > _rank(state):
        changes = {"state": "BATCHED", "attempts": attempt, "task_id": task_id, "reason": None}
        return Step("BATCHED", evidence, changes)
    if attempt == state["attempts"] and state["task_id"] is None and task_id is not None:
        return Step("BATCHED", evidence, {"task_id": task_id})
    return Step("BATCHED", evidence, evidence_only=True)


def _transfer_failed(state: State, event: Event) -> Step | None:
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
    return Step(name, evidence_of(event, *fields), changes)


def _transferred(state: State, event: Event) -> Step:
    changes = {
        "state": _settled(state["ingested"], state["deleted"]),
        "task_id": event["task_id"],
        "checksum": event["checksum"],
        "attempts": max(state["attempts"], int(event["attempt"])),
        "reason": _clear(state["reason"], TRANSFER_REASON),
    }
    fields = ("batch_id", "task_id", "backend", "checksum", "checksum_algorithm")
    evidence = evidence_of(event, *fields, "skipped_identical", "attempt")
    # Read after the ingestion or deletion it precedes (a keeper reads its topics at their own
    # pace), it moves nothing, but the history still shows the transfer, once.
    return Step("TRANSFERRED", evidence, changes, evidence_only=transferred(state))


def _ingested(state: State, event: Event) -> Step | None:
    if state["ingested"]:
        return None
    reason = _clear(state["reason"], TRANSFER_REASON, INGEST_REASON)
    if reason is None and not state["deleted"]:
        reason = _last_refusal(state)  # an ingest reason may have hidden it
    changes = {
        "state": _settled(True, state["deleted"]),
        "ingested": True,
        "dataset_id": event["dataset_id"],
        "file_id": event["file_id"],
        "reason": reason,
        "warning": event.get("warning"),
    }
    fields = ("catalog", "dataset_id", "file_id", "collection_ids", "created", "warning")
    return Step("INGESTED", evidence_of(event, *fields), changes)


def _ingest_failed(state: State, event: Event) -> Step | None:
    if state["ingested"]:
        return None
    reason = _clear(state["reason"], TRANSFER_REASON)
    attempt = int(event["attempt"])
    if event["final"]:
        reason = INGEST_REASON + event["reason"]
    elif _retry_outranks(reason, attempt):
        reason = waiting_reason(event["reason"], attempt)
    changes = {"state": _settled(False, state["deleted"]), "reason": reason}
    evidence = evidence_of(event, "catalog", "reason", "attempt", "final")
    varying = frozenset() if event["final"] else frozenset({"attempt"})
    return Step("INGEST_FAILED", evidence, changes, evidence_only=True, varying=varying)


def _retry_outranks(reason: str | None, attempt: int) -> bool:
    """True when a non-final ingest failure of ``attempt`` is shown instead of ``reason``: any
    other stage's reason and an earlier attempt's yield to it; a final ingest failure does not."""
    if reason is None or not reason.startswith(INGEST_REASON):
        return True
    shown = waiting_attempt(reason)
    return shown is not None and shown < attempt


def _last_refusal(state: State) -> str | None:
    """The reason of the last refused deletion of the record's version in its history, if any."""
    for t in reversed(state["history"]):
        evidence = t["evidence"]
        if t["state"] == "DELETE_REFUSED" and evidence.get("version") == state["version"]:
            return DELETE_REASON + str(evidence.get("reason", "no reason given"))
    return None


def _deleted(state: State, event: Event) -> Step | None:
    if state["deleted"]:
        return None
    outcome = event["outcome"]
    fields = ("outcome", "reason", "checksum", "destination_confirmed", "removed_dirs")
    evidence = evidence_of(event, *fields)
    reason = _clear(state["reason"], TRANSFER_REASON)
    if outcome in ("DELETED", "ALREADY_GONE"):
        changes = {
            "state": _settled(state["ingested"], True),
            "deleted": True,
            "reason": _clear(reason, DELETE_REASON),
        }
        return Step("DELETED", evidence, changes)
    if outcome == "REFUSED" and not (reason or "").startswith(INGEST_REASON):
        reason = DELETE_REASON + (event["reason"] or "no reason given")
    name = "DELETE_REFUSED" if outcome == "REFUSED" else "DELETE_DRY_RUN"
    changes = {"state": _settled(state["ingested"], False), "reason": reason}
    return Step(name, evidence, changes, evidence_only=True)


STEPS: dict[str, Callable[[State, Event], Step | None]] = {
    "FileArrived": arrived,
    "FileTransferred": _transferred,
    "FileTransferFailed": _transfer_failed,
    "FileIngested": _ingested,
    "FileIngestFailed": _ingest_failed,
    "FileDeleted": _deleted,
}
