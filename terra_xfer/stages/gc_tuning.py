"""Garbage collection set for a long-running stage, once the stage is built.

A stage frees almost everything it allocates by reference counting: over 20,000 files through
``up`` no stage's collector found a single cycle beyond those it found while importing. Yet the
collector's full passes walk every live container, and the state keeper holds tens of thousands of
FileStates in memory, each a dozen containers, all walked again by every full pass. With the
default thresholds it made 19 of them over those 20,000 files, and they were a quarter to a third
of its CPU (``python -m bench.profile cpu``). Two changes, each standard for long-lived servers:

- ``gc.freeze()`` once the stage is built: what importing and building allocated (modules, schemas,
  compiled codecs, configuration) moves to a permanent generation no pass walks again.
- Higher thresholds: a young collection every 10,000 net allocations instead of 700, and a full
  pass considered after 100 middle ones instead of 10 (Python still runs it only once the objects
  promoted since the last one reach a quarter of the heap). Cycles are still collected, later.

The peak memory of every stage was the same either way (VmHWM, the same run).
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 10, 100)


def settle() -> None:
    """Freeze what exists now and collect less often from here on (see the module's docstring)."""
    gc.collect()  # garbage of the start-up is not frozen along with it
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
