"""Watching ``up``'s stage processes from outside: which are its children, and whether they are gone.

A process counts as gone when ``/proc`` no longer has it, when it is a zombie (dead, waiting for
whoever inherited it to reap it), or when its pid now belongs to a process started later.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    """One process, told apart from a later one given the same pid by its start time."""

    pid: int
    started: int  # clock ticks after boot (field 22 of /proc/<pid>/stat)
    comm: str


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def children_of(pid: int) -> list[Proc]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or fields[0] == "Z" or int(fields[1]) != pid:
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(Proc(int(entry.name), int(fields[19]), comm))
    return sorted(found, key=lambda p: p.pid)


def alive(proc: Proc) -> bool:
    """Whether ``proc`` still runs (a zombie does not)."""
    fields = _stat(proc.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == proc.started


def survivors(procs: Iterable[Proc], within_s: float) -> list[Proc]:
    """Those of ``procs`` still alive ``within_s`` seconds from now (none: returns at once)."""
    procs = list(procs)
    deadline = time.monotonic() + within_s
    while True:
        left = [p for p in procs if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)  # polling /proc until the deadline


def log_lines_with(log: bytes, *words: bytes) -> list[str]:
    """The lines of ``log`` holding any of ``words`` (case-insensitive)."""
    wanted = [w.lower() for w in words]
    return [
        line.decode("utf-8", "replace")
        for line in log.splitlines()
        if any(w in line.lower() for w in wanted)
    ]
