"""CPU time of each process of a measured run: every stage of ``up``, ``up`` itself, the broker.

Read from ``/proc/<pid>/stat`` (user + system time of all the process's threads, in clock ticks)
at the start and the end of the measured interval, so start-up is left out. With a process per
stage, the stage processes are ``up``'s children named ``tx-<stage>`` (see
:func:`terra_xfer.stages.child.process_name`); with ``--threads`` there is only ``up``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
STAGE_PREFIX = "tx-"


def parse_stat(text: str) -> tuple[str, int, int]:
    """(comm, parent pid, user + system ticks) of one ``/proc/<pid>/stat`` line.

    The comm is in parentheses and may hold spaces or parentheses itself: the fields after it
    start after the last ``)``.
    """
    head, _, rest = text.rpartition(")")
    comm = head.partition("(")[2]
    fields = rest.split()
    # fields[0] is the state (field 3); ppid is field 4, utime field 14, stime field 15.
    return comm, int(fields[1]), int(fields[11]) + int(fields[12])


def _stat(pid: int) -> tuple[str, int, int] | None:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def processes(up_pid: int, broker_pid: int | None = None) -> dict[str, int]:
    """{name: pid} of ``up`` ("up"), its stage children (by stage) and the broker ("broker")."""
    found = {"up": up_pid}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] == up_pid and stat[0].startswith(STAGE_PREFIX):
            found[stat[0].removeprefix(STAGE_PREFIX)] = int(entry.name)
    if broker_pid is not None:
        found["broker"] = broker_pid
    return found


def ticks(pids: Mapping[str, int]) -> dict[str, int]:
    """User + system ticks of each live process so far."""
    out = {}
    for name, pid in pids.items():
        stat = _stat(pid)
        if stat is not None:
            out[name] = stat[2]
    return out


class CpuMeter:
    """CPU seconds each process used between :meth:`start` and :meth:`read`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, int] = {}

    def start(self) -> CpuMeter:
        self._start = ticks(self.pids)
        return self

    def read(self) -> dict[str, float]:
        """Seconds per process, busiest first (a process gone in between is left out)."""
        end = ticks(self.pids)
        used = {n: (end[n] - self._start[n]) * TICK_S for n in end if n in self._start}
        return {n: round(s, 2) for n, s in sorted(used.items(), key=lambda kv: -kv[1])}


def busy_s() -> float:
    """Seconds every core of the machine has been busy since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields) - idle) * TICK_S


def per_file_ms(cpu_s: Mapping[str, float], files: int) -> dict[str, float]:
    """Milliseconds of CPU per file of each process, and of the pipeline's own processes together
    under "pipeline" (every process but the broker)."""
    if files <= 0:
        return {}
    out = {n: round(s * 1000 / files, 3) for n, s in cpu_s.items()}
    out["pipeline"] = round(sum(s for n, s in cpu_s.items() if n != "broker") * 1000 / files, 3)
    return out
