"""A circuit breaker: stop sending work to a remote service that keeps failing, and probe it now
and then instead, so a service in trouble is not hammered by every waiting item.

Pure: outcomes are told to it, time comes from an injectable clock, and it does no I/O. Three
states:

- ``closed``: everything goes. The outcomes of the last ``window`` calls are kept; once at least
  ``min_calls`` of them are known and the share of failures reaches ``failure_ratio``, it opens.
- ``open``: nothing goes until the open period is over; then it is half-open.
- ``half-open``: one trial call goes. Its success closes the breaker (the window starts empty);
  its failure opens it again for twice as long as before, up to ``max_open_s``.

A single caller asks :meth:`allow` before each call and tells :meth:`record` its outcome.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

CLOSED = "closed"
HALF_OPEN = "half-open"
OPEN = "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # as the metrics gauge shows them


class CircuitBreaker:
    """Closed, open or half-open, from the outcomes of the last calls."""

    def __init__(
        self,
        *,
        window: int = 20,
        min_calls: int = 10,
        failure_ratio: float = 0.8,
        first_open_s: float = 1.0,
        max_open_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < min_calls <= window or not 0.0 < failure_ratio <= 1.0:
            raise ValueError("need 0 < min_calls <= window and 0 < failure_ratio <= 1")
        self.min_calls = min_calls
        self.failure_ratio = failure_ratio
        self.first_open_s = first_open_s
        self.max_open_s = max_open_s
        self.clock = clock
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._open_s = first_open_s
        self._open_until: float | None = None  # set while open or half-open
        self._trial_out = False

    @property
    def state(self) -> str:
        if self._open_until is None:
            return CLOSED
        return HALF_OPEN if self._trial_out or self.clock() >= self._open_until else OPEN

    def allow(self) -> bool:
        """Whether a call may go now. Half-open, one trial goes; the next may go only after its
        outcome is told, or, if it never is, one open period later."""
        if self._open_until is None:
            return True
        now = self.clock()
        if now < self._open_until:
            return False
        self._trial_out = True
        self._open_until = now + self._open_s
        return True

    def wait_s(self) -> float:
        """Seconds until :meth:`allow` may say yes again (0 when it would now)."""
        if self._open_until is None:
            return 0.0
        return max(0.0, self._open_until - self.clock())

    def record(self, ok: bool) -> None:
        """The outcome of one call that :meth:`allow` let go."""
        if self._open_until is None:
            self._outcomes.append(ok)
            if self._failing():
                self._open_s = self.first_open_s
                self._open_until = self.clock() + self._open_s
        elif self._trial_out:
            self._trial_out = False
            if ok:
                self._open_until = None
                self._outcomes.clear()
            else:
                self._open_s = min(self.max_open_s, self._open_s * 2)
                self._open_until = self.clock() + self._open_s
        # else: a late outcome of a call let go before the breaker opened; it changes nothing

    def _failing(self) -> bool:
        known = len(self._outcomes)
        return known >= self.min_calls and self._outcomes.count(False) >= self.failure_ratio * known
