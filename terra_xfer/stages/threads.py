"""``up --threads``: every stage in a thread of this process, with the supervisor's restart policy.

Each thread runs the same host as a stage process (:func:`terra_xfer.stages.host.run_stage`), with
its own Kafka clients and consumer group. A stage whose run fails is closed and built again after
the restart policy's delay; a configuration error stops every stage and is raised by :meth:`join`.
A stalled step cannot be taken from a thread, so the stall guard exits the whole process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from terra_xfer.config import Config
from terra_xfer.errors import ConfigError
from terra_xfer.metrics_http import Health
from terra_xfer.stages.host import Restarts, StopSignal, run_stage
from terra_xfer.stages.spec import StageSpec
from terra_xfer.stages.stall_guard import StallGuard

log = logging.getLogger(__name__)


@dataclass
class StageThread:
    spec: StageSpec
    restarts: Restarts
    handled: int = 0
    before: int = 0
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name


class ThreadedStages:
    """Runs every stage of ``specs`` in a thread until ``stop``."""

    def __init__(
        self,
        config: Config,
        specs: Sequence[StageSpec],
        stop: StopSignal,
        health: Health | None = None,
        guard: StallGuard | None = None,
    ) -> None:
        self.config = config
        self.stop = stop
        self.health = health
        self.guard = guard
        self.error: ConfigError | None = None
        self.threads = [StageThread(s, Restarts(s.name)) for s in specs]

    @property
    def handled(self) -> dict[str, int]:
        return {t.name: t.handled for t in self.threads}

    def start(self) -> ThreadedStages:
        for st in self.threads:
            if self.health is not None:
                self.health.expect(st.name)
            st.thread = threading.Thread(target=self._run, args=(st,), name=st.name, daemon=True)
            st.thread.start()
        return self

    def _run(self, st: StageThread) -> None:
        while not self.stop.is_set():
            st.restarts.started()
            try:
                run_stage(
                    st.spec,
                    self.config,
                    self.stop,
                    health=self.health,
                    guard=self.guard,
                    beat=lambda name, n: self._beat(st, n),
                )
            except ConfigError as exc:
                log.error("stage %s: %s; stopping every stage", st.name, exc)
                self.error = exc
                self.stop.set()
                return
            except Exception as exc:
                log.exception("stage %s failed", st.name)
                st.before = st.handled
                self.stop.wait(st.restarts.ended(f"failed ({type(exc).__name__}: {exc})"))

    def _beat(self, st: StageThread, handled: int) -> None:
        st.handled = st.before + handled
        if self.health is not None:
            self.health.beat(st.name)

    def join(self, timeout_s: float = 30.0) -> None:
        """Stop every stage, wait for each to close, and raise a configuration error if one
        stopped them."""
        self.stop.set()
        for st in self.threads:
            if st.thread is not None:
                st.thread.join(timeout_s)
                if st.thread.is_alive():
                    log.error("stage %s did not stop within %.0f s", st.name, timeout_s)
        if self.error is not None:
            raise self.error
