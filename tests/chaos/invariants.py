"""The promises a chaos run checks, as pure functions over what the run recorded and found.

Every check returns violations as one sentence each; a run passes when there are none. The inputs
are plain values (dicts of paths to digests, lists of decoded events, the catalog's rows) so the
checks are tested without running anything. files.state is checked record by record
(:func:`follow`, one pass in offset order) and by its last record per key; ``status`` and
``report`` are checked against a recount from the event topics (:func:`recount`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GONE = frozenset({"DELETED", "ALREADY_GONE"})
REQUIRED = ("ARRIVED", "BATCHED", "TRANSFERRED", "INGESTED", "DELETED")  # in every final history
AFTER_TRANSFER = frozenset({"TRANSFERRED", "INGESTED", "DELETED", "DONE"})
HISTORY_CAP = 50  # transitions the fold keeps per record
KEEPER = "state-keeper"  # the dead-letter source of the state keeper


@dataclass(frozen=True)
class Stamp:
    """A file as it was written into the cache: its digest and version."""

    sha256: str
    size: int
    mtime_ns: int


StateRecord = tuple[int, int, Mapping[str, Any]]  # files.state partition, offset, FileState


@dataclass(frozen=True)
class Trail:
    """One pass over files.state: each key's last record, and what went wrong on the way."""

    latest: Mapping[str, StateRecord]
    violations: Sequence[str]


@dataclass(frozen=True)
class Found:
    """What the run left behind, read after every stage stopped."""

    states: Mapping[str, str]  # file key -> latest state in files.state
    dest_paths: Mapping[str, str]  # file key -> destination path (relative)
    destination: Mapping[str, str]  # destination relative path -> sha256 of its bytes now
    cache: Mapping[str, Stamp]  # cache relative path -> the file there now
    deletions: Sequence[Mapping[str, Any]]  # FileDeleted events
    dead_letters: Sequence[bytes]  # raw bytes of every dead letter
    catalog: Sequence[tuple[str, str]]  # (dataset name, file name), one per catalog entry
    trail: Trail  # files.state, record by record (see follow)
    arrived: Sequence[Mapping[str, Any]]  # FileArrived events
    transferred: Sequence[Mapping[str, Any]]  # FileTransferred events
    ingested: Sequence[Mapping[str, Any]]  # FileIngested events
    dead_sources: Sequence[tuple[str, str]]  # (source, reason) of every dead letter
    status: Sequence[Mapping[str, Any]]  # `terra-xfer status --all --json`
    report: Sequence[Mapping[str, Any]]  # the "files" lines of `terra-xfer report --json`


def check(
    site: str,
    shipped: Mapping[str, Stamp],
    ignored: Mapping[str, Stamp],
    bad_lines: Iterable[bytes],
    found: Found,
) -> list[str]:
    """Every violated promise, given the whitelisted files (by cache path), the rest, and the
    malformed lines the run injected."""
    keys = {f"{site}/{rel}": rel for rel in shipped}
    events = (found.arrived, found.transferred, found.ingested, found.deletions)
    return [
        *not_done(keys, found),
        *bad_copies(keys, shipped, found),
        *unsafe_deletions(shipped, found),
        *touched(ignored, found),
        *duplicate_entries(found.catalog),
        *dead_letter_mismatch(bad_lines, expected_dead(site, found)),
        *found.trail.violations,
        *incomplete_histories(keys, found.trail.latest),
        *lost_arrival_meta(found.arrived, found.trail.latest),
        *status_mismatch(found.trail.latest, found.status),
        *report_mismatch(recount(*events), found.report),
        *keeper_refusals(found.dead_sources),
    ]


def not_done(keys: Mapping[str, str], found: Found) -> list[str]:
    missing = sorted(k for k in keys if found.states.get(k) != "DONE")
    return [f"{k} ended {found.states.get(k, 'unseen')}, not DONE" for k in missing]


def bad_copies(keys: Mapping[str, str], shipped: Mapping[str, Stamp], found: Found) -> list[str]:
    out = []
    for key, rel in sorted(keys.items()):
        dest = found.dest_paths.get(key)
        if dest is None:
            out.append(f"{key} has no destination path in its events")
        elif found.destination.get(dest) != shipped[rel].sha256:
            out.append(f"{key}: destination {dest} is missing or differs from the cache copy")
    expected = {found.dest_paths.get(key) for key in keys}
    out += [
        f"{p} at the destination was never shipped" for p in found.destination if p not in expected
    ]
    return out


def unsafe_deletions(shipped: Mapping[str, Stamp], found: Found) -> list[str]:
    """A file gone from the cache needs a record with its destination copy confirmed, and a
    deletion of exactly the version written."""
    out = []
    records = {e["path"]: e for e in found.deletions if e["outcome"] in GONE}
    for path, event in sorted(records.items()):
        stamp = shipped.get(path)
        if stamp is None:
            out.append(f"{path} was deleted but never shipped")
        elif not event["destination_confirmed"]:
            out.append(f"{path} left the cache without a confirmed destination copy")
        elif (event["size"], event["mtime_ns"]) != (stamp.size, stamp.mtime_ns):
            out.append(f"{path} was deleted as a version that was not the one written")
    for rel in sorted(set(shipped) - set(found.cache)):
        if rel not in records:
            out.append(f"{rel} is gone from the cache with no deletion recorded")
    return out


def touched(ignored: Mapping[str, Stamp], found: Found) -> list[str]:
    out = []
    for rel, stamp in sorted(ignored.items()):
        now = found.cache.get(rel)
        if now is None:
            out.append(f"non-whitelisted {rel} was removed from the cache")
        elif now != stamp:
            out.append(f"non-whitelisted {rel} was changed in the cache")
    return out


def duplicate_entries(catalog: Sequence[tuple[str, str]]) -> list[str]:
    counts = Counter(catalog)
    return [f"{name} is in dataset {ds!r} {n} times" for (ds, name), n in counts.items() if n > 1]


MISSING = re.compile(r"^file '(.+)' is missing from the cache$")


def expected_dead(site: str, found: Found) -> list[bytes]:
    """The dead letters that must match the injected lines: all but those of lines naming a
    file the sweeper shipped before the producer read them. While the producer is behind (a
    restart, a rotated log read late) the sweeper re-queues a cache file nobody announced, and
    the pipeline ships and deletes it; the producer then reads its line and finds the file gone.
    Such a letter is told for a file whose history shows the sweeper's arrival and that is DONE.
    """
    kept = []
    reasons = [reason for _source, reason in found.dead_sources]  # in the letters' order
    for i, raw in enumerate(found.dead_letters):
        missing = MISSING.match(reasons[i]) if i < len(reasons) else None
        record = found.trail.latest.get(f"{site}/{missing.group(1)}") if missing else None
        state = record[2] if record is not None else None
        swept = state is not None and any(
            t["state"] == "ARRIVED" and t["evidence"].get("source") == "SWEEPER"
            for t in state["history"]
        )
        if not (swept and state is not None and state["state"] == "DONE"):
            kept.append(raw)
    return kept


def dead_letter_mismatch(injected: Iterable[bytes], dead: Sequence[bytes]) -> list[str]:
    want = Counter(line.rstrip(b"\r\n") for line in injected)
    got = Counter(raw.rstrip(b"\r\n") for raw in dead)
    out = [f"injected line {line!r} was not dead-lettered" for line in want - got]
    out += [f"unexpected dead letter {raw!r}" for raw in got - want]
    return out


def follow(records: Iterable[StateRecord]) -> Trail:
    """Walk files.state record by record: each key's records must only move forward.

    A key's records share a partition, so reading the topic partition by partition in offset order
    gives each key's records in the order they were written.
    """
    latest: dict[str, StateRecord] = {}
    described: set[str] = set()  # keys some record gave a sensor and a date
    out: list[str] = []
    for record in records:
        key = record[2]["key"]
        before = latest.get(key)
        if before is not None:
            out += stepped_back(before, record)
        out += lost_meta(key in described, record)
        if record[2]["sensor"] is not None and record[2]["date"] is not None:
            described.add(key)
        latest[key] = record
    return Trail(latest, out)


def stepped_back(before: StateRecord, after: StateRecord) -> list[str]:
    """What went backwards from one record of a key to its next: an older version after a newer
    one; for the same version, a state back before TRANSFERRED (or out of DONE), a flag turned off;
    a history that is not the one before with transitions appended (the fold keeps the last 50)."""
    old, new = before[2], after[2]
    at = f"{new['key']} at files.state {_where(after)} (after {_where(before)})"
    out = []
    if _version(new["version"]) < _version(old["version"]):
        out.append(f"{at}: version {new['version']} follows the newer {old['version']}")
    elif new["version"] == old["version"]:
        if (old["state"] in AFTER_TRANSFER and new["state"] not in AFTER_TRANSFER) or (
            old["state"] == "DONE" != new["state"]
        ):
            out.append(f"{at}: state went back from {old['state']} to {new['state']}")
        out += [
            f"{at}: {flag} went from true to false"
            for flag in ("ingested", "deleted")
            if old[flag] and not new[flag]
        ]
    if not _extends(_history(old), _history(new)):
        out.append(f"{at}: history {_names(new)} does not extend the one before, {_names(old)}")
    return out


def lost_meta(described: bool, record: StateRecord) -> list[str]:
    """A record without sensor or date, of a key an earlier record gave both (a stub)."""
    value = record[2]
    if not described or (value["sensor"] is not None and value["date"] is not None):
        return []
    return [
        f"{value['key']} at files.state {_where(record)} has sensor {value['sensor']} and date "
        f"{value['date']} after a record that had both (history: {_names(value)})"
    ]


def incomplete_histories(keys: Iterable[str], latest: Mapping[str, StateRecord]) -> list[str]:
    """Each file's last record must show its version ARRIVED, BATCHED, TRANSFERRED, INGESTED and
    DELETED (with 50 transitions, the fold's cap, the first two may have been dropped)."""
    out = []
    for key in sorted(keys):
        if key not in latest:
            continue  # not_done names it
        value = latest[key][2]
        seen = {
            t["state"] for t in value["history"] if t["evidence"].get("version") == value["version"]
        }
        wanted = REQUIRED[2:] if len(value["history"]) >= HISTORY_CAP else REQUIRED
        missing = [name for name in wanted if name not in seen]
        if missing:
            out.append(
                f"{key}: final history (files.state {_where(latest[key])}) lacks "
                f"{', '.join(missing)}: {_names(value)}"
            )
    return out


def lost_arrival_meta(
    arrived: Iterable[Mapping[str, Any]], latest: Mapping[str, StateRecord]
) -> list[str]:
    """A file's last record must carry the sensor and date its FileArrived gave."""
    return sorted(
        {
            f"{e['key']}: final record has {name} {latest[e['key']][2][name]}, its FileArrived {e[name]}"
            for e in arrived
            for name in ("sensor", "date")
            if e["key"] in latest and e[name] not in (None, latest[e["key"]][2][name])
        }
    )


def status_mismatch(
    latest: Mapping[str, StateRecord], status: Sequence[Mapping[str, Any]]
) -> list[str]:
    """``status --all --json`` must list every key once, in the state and version of its last record."""
    listed = {row["key"]: (row["state"], row["version"]) for row in status}
    want = {key: (r[2]["state"], r[2]["version"]) for key, r in latest.items()}
    counted = Counter(row["key"] for row in status)
    out = [f"status lists {key} {n} times" for key, n in sorted(counted.items()) if n > 1]
    for key in sorted(listed.keys() | want.keys()):
        if listed.get(key) != want.get(key):
            out.append(f"status says {key} is {listed.get(key)}, files.state {want.get(key)}")
    return out


Counts = tuple[int, int, int, int]  # files arrived, transferred, ingested, deleted


def recount(
    arrived: Iterable[Mapping[str, Any]],
    transferred: Iterable[Mapping[str, Any]],
    ingested: Iterable[Mapping[str, Any]],
    deletions: Iterable[Mapping[str, Any]],
) -> dict[tuple[str | None, str], Counts]:
    """The report's counts from the event topics: each file once per sensor and day (its date, or
    the UTC day it arrived), as its newest version: arrived; with a FileTransferred, a FileIngested
    and a FileDeleted (deleted or already gone) of that version."""
    newest: dict[str, Mapping[str, Any]] = {}
    first_ms: dict[str, int] = {}
    for event in arrived:
        key, at = event["key"], event.get("logged_ms") or event["emitted_ms"]
        first_ms[key] = min(first_ms.get(key, at), at)
        if key not in newest or _version(event["version"]) > _version(newest[key]["version"]):
            newest[key] = event
    done = [
        {(e["key"], e["version"]) for e in transferred},
        {(e["key"], e["version"]) for e in ingested},
        {(e["key"], e["version"]) for e in deletions if e["outcome"] in GONE},
    ]
    counts: dict[tuple[str | None, str], list[int]] = {}
    for key, event in newest.items():
        day = event["date"] or datetime.fromtimestamp(first_ms[key] / 1000, UTC).date().isoformat()
        line = counts.setdefault((event["sensor"], day), [0, 0, 0, 0])
        line[0] += 1
        for i, found in enumerate(done, start=1):
            line[i] += (key, event["version"]) in found
    return {where: (a, t, i, d) for where, (a, t, i, d) in counts.items()}


def report_mismatch(
    want: Mapping[tuple[str | None, str], Counts], lines: Sequence[Mapping[str, Any]]
) -> list[str]:
    """``report --json`` must give, per sensor and day, the counts of :func:`recount`."""
    names = ("files_arrived", "files_transferred", "files_ingested", "files_deleted")
    got = {(ln["sensor"], ln["date"]): tuple(int(ln[n]) for n in names) for ln in lines}
    return [
        f"report gives {sensor} on {day} (arrived, transferred, ingested, deleted) "
        f"{got.get((sensor, day))}, the topics {want.get((sensor, day))}"
        for sensor, day in sorted(got.keys() | want.keys(), key=str)
        if got.get((sensor, day)) != want.get((sensor, day))
    ]


def keeper_refusals(sources: Iterable[tuple[str, str]]) -> list[str]:
    """With co-partitioned events no state keeper ever refuses a file it does not own."""
    return [f"the state keeper dead-lettered: {reason}" for src, reason in sources if src == KEEPER]


def _where(record: StateRecord) -> str:
    return f"{record[0]}@{record[1]}"


def _version(version: str) -> tuple[int, int]:
    """Versions ``<size>:<mtime_ns>`` order by mtime, then size."""
    size, _, mtime = version.partition(":")
    return int(mtime), int(size)


def _history(value: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    return [(t["state"], t["at_ms"], sorted(t["evidence"].items())) for t in value["history"]]


def _extends(old: list[tuple[Any, ...]], new: list[tuple[Any, ...]]) -> bool:
    """Whether ``new`` is ``old`` with transitions appended, the oldest dropped beyond the cap."""
    if len(new) < HISTORY_CAP or not old:
        return new[: len(old)] == old
    return any(new[: len(old) - k] == old[k:] for k in range(len(old)))


def _names(value: Mapping[str, Any]) -> str:
    return " > ".join(t["state"] for t in value["history"]) or "empty"
