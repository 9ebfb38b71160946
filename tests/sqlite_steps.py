"""How much work SQLite does for one call: the virtual machine instructions it runs, counted with
a progress handler. A count, not a time: a query whose work must not grow with the rows of a
table is checked by running it before and after rows are added."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def sqlite_steps(db: sqlite3.Connection, call: Callable[[], object]) -> int:
    """The instructions ``db`` runs while ``call`` runs."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0  # go on

    db.set_progress_handler(tick, 1)
    try:
        call()
    finally:
        db.set_progress_handler(None, 1)
    return steps[0]
