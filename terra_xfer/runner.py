"""Running several stages in one process, each in its own thread, as `terra-xfer up` does.

Every stage keeps its own Kafka clients and consumer group, exactly as in its own Deployment; the
threads only share the stop event. A stage whose step raises stops the whole runner (the error is
kept and re-raised by :meth:`StageRunner.join`), because a half-running pipeline would silently
pile up work: better to stop, with the reason, and be restarted. Transient errors (the broker or a
remote service away for a while) are retried after a pause instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from terra_xfer.errors import TransientError

log = logging.getLogger(__name__)
RETRY_S = 2.0


class Stage(Protocol):
    def step(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class StageThread:
    name: str
    stage: Stage
    handled: int = 0
    error: BaseException | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


class StageRunner:
    """Start every stage's loop in a thread; stop them all together."""

    def __init__(self, stages: Sequence[tuple[str, Stage]], idle_wait_s: float = 0.05) -> None:
        self.stop = threading.Event()
        self.idle_wait_s = idle_wait_s
        self.threads = [StageThread(name, stage) for name, stage in stages]

    def start(self) -> StageRunner:
        for st in self.threads:
            st.thread = threading.Thread(target=self._loop, args=(st,), name=st.name, daemon=True)
            st.thread.start()
        return self

    def _loop(self, st: StageThread) -> None:
        try:
            while not self.stop.is_set():
                try:
                    count = st.stage.step()
                except TransientError as exc:  # the broker or a service is away: try again soon
                    log.warning("stage %s: %s; retrying in %.0f s", st.name, exc, RETRY_S)
                    self.stop.wait(RETRY_S)
                    continue
                st.handled += count
                if not count:
                    self.stop.wait(self.idle_wait_s)
        except BaseException as exc:  # kept and re-raised by join(); the runner stops
            st.error = exc
            log.exception("stage %s failed; stopping every stage", st.name)
            self.stop.set()

    def wait(self, done: Callable[[], bool], timeout_s: float, check_every_s: float = 1.0) -> bool:
        """Wait until ``done()`` holds, a stage fails, or time runs out; True when done."""
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set():
            if done():
                return True
            if time.monotonic() >= deadline:
                return False
            self.stop.wait(check_every_s)
        return False

    def join(self, close: bool = True, timeout_s: float = 30.0) -> None:
        """Stop every loop, close every stage, and re-raise the first stage error."""
        self.stop.set()
        for st in self.threads:
            if st.thread is not None:
                st.thread.join(timeout_s)
        if close:
            for st in reversed(self.threads):
                try:
                    st.stage.close()
                except Exception:  # closing one must not keep the others open
                    log.exception("closing stage %s failed", st.name)
        errors = [st.error for st in self.threads if st.error is not None]
        if errors:
            raise errors[0]
