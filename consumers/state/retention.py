"""How long settled files stay in a stage's local copy of files.state, and when it is pruned.

The batcher's and the sweeper's views and the state keeper's working copy answer questions about
files in flight: a file settled (DONE or MISSING, see :func:`consumers.state.fold.settled_before`)
longer ago than ``[status] retain_settled_days`` leaves them, so they hold what is in flight and
what settled recently, not every file ever shipped. files.state stays the complete record, and the
status index (``status``, ``report``) keeps every file.

The window is longer than the event topics' retention (the configuration refuses less), so no
event still in Kafka can name a file its stage no longer knows. A copy rebuilt from files.state
skips such records as it reads them; a copy kept running drops them every ``PRUNE_EVERY_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from consumers.state.fold import settled_before
from terra_xfer.config import Config

DAY_MS = 86_400_000
PRUNE_EVERY_S = 600.0


class Retention:
    """The settled-file window of one local copy; ``keep_ms`` None keeps every file."""

    def __init__(
        self,
        keep_ms: int | None,
        *,
        every_s: float = PRUNE_EVERY_S,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_ms = keep_ms
        self.every_s = every_s
        self.wall_ms = wall_ms
        self.clock = clock
        self._last: float | None = None

    @classmethod
    def of(cls, config: Config) -> Retention:
        days = config.status.retain_settled_days
        return cls(int(days * DAY_MS) if days > 0 else None)

    def cutoff_ms(self) -> int | None:
        """Settled files last changed before this instant leave the copy (None: none do)."""
        return None if self.keep_ms is None else self.wall_ms() - self.keep_ms

    def drops(self, state: Mapping[str, Any], cutoff_ms: int | None) -> bool:
        """True when a record read from files.state is not kept (see ``settled_before``)."""
        return cutoff_ms is not None and settled_before(state, cutoff_ms)

    def due(self) -> bool:
        """True when the copy should be pruned now: at the first call, then every ``every_s``."""
        if self.keep_ms is None:
            return False
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        return True
