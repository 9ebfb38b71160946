"""The promises a chaos run checks, as pure functions over what the run recorded and found.

Every check returns violations as one sentence each; a run passes when there are none. The inputs
are plain values (dicts of paths to digests, lists of decoded events, the catalog's rows) so the
checks are tested without running anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GONE = frozenset({"DELETED", "ALREADY_GONE"})


@dataclass(frozen=True)
class Stamp:
    """A file as it was written into the cache: its digest and version."""

    sha256: str
    size: int
    mtime_ns: int


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
    return [
        *not_done(keys, found),
        *bad_copies(keys, shipped, found),
        *unsafe_deletions(shipped, found),
        *touched(ignored, found),
        *duplicate_entries(found.catalog),
        *dead_letter_mismatch(bad_lines, found.dead_letters),
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


def dead_letter_mismatch(injected: Iterable[bytes], dead: Sequence[bytes]) -> list[str]:
    want = Counter(line.rstrip(b"\r\n") for line in injected)
    got = Counter(raw.rstrip(b"\r\n") for raw in dead)
    out = [f"injected line {line!r} was not dead-lettered" for line in want - got]
    out += [f"unexpected dead letter {raw!r}" for raw in got - want]
    return out
