"""The remote services of a chaos run: the configuration that points the pipeline at the Globus
and Clowder doubles, and the faults those doubles are made to show at random moments."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.doubles.clowder_api import ClowderDouble
from tests.doubles.globus_api import GlobusDouble


def config_toml(work: Path, bootstrap: str, globus: GlobusDouble, clowder: ClowderDouble) -> str:
    src = globus.add_endpoint(work / "cache")
    dst = globus.add_endpoint(work / "destination")
    return f"""
[kafka]
bootstrap_servers = "{bootstrap}"
partitions = 3
[gantry]
xferlog = "{work}/log/xferlog"
cache_root = "{work}/cache"
log_root = "/gantry_data"
[batcher]
max_files = 60
max_wait_s = 1
[transfer]
backend = "globus"
destination_root = "{work}/destination"
state_dir = "{work}/transfer"
[transfer.globus]
client_id = "{globus.client_id}"
source_endpoint = "{src}"
destination_endpoint = "{dst}"
source_base = "/"
destination_base = "/"
[monitor]
max_attempts = 10
poll_initial_s = 0.1
poll_max_s = 1
retry_backoff_s = 0.5
submit_grace_s = 3
[catalog]
backend = "clowder"
[catalog.clowder]
url = "{clowder.url}"
[status]
index_path = "{work}/status.sqlite"
keeper_path = "{work}/keeper.sqlite"
[metrics]
port = 0
stall_exit_s = 60
"""


FLAKY_S = 10.0  # how long a flaky Clowder stays flaky


class Faults:
    """The remote failures of a run, fired one at a time at random moments."""

    def __init__(self, globus: GlobusDouble, clowder: ClowderDouble, rng: random.Random) -> None:
        self.globus, self.clowder, self.rng = globus, clowder, rng
        self.fired: Counter[str] = Counter()
        self.failing: list[tuple[float, list[str]]] = []  # (since, paths) of each partial failure
        self.resumed: set[str] = set()
        self.flaky_since: float | None = None
        upload = "POST /api/uploadToDataset/:id"
        self.kinds: dict[str, Callable[[], None]] = {
            "globus-429": lambda: globus.fail_requests(429, 2, retry_after=1),
            "globus-503": lambda: globus.fail_requests(503, 2),
            "globus-slow": lambda: globus.slow_requests(2.0, 2),
            "globus-lost-submit": lambda: globus.lose_next_submit_response(502),
            "globus-task-failed": lambda: globus.fail_next_task("ENDPOINT_ERROR", after_files=5),
            "globus-task-inactive": lambda: globus.pause_next_task(after_files=3),
            "clowder-503": lambda: clowder.faults.fail(upload, 503, times=3),
            "clowder-500": lambda: clowder.faults.fail("POST /api/datasets/createempty", 500),
            "clowder-reset": lambda: clowder.faults.reset(upload, times=2),
            "clowder-flaky": self._flaky,
        }

    def fire(self, shipped: list[str]) -> None:
        kind = self.rng.choice([*self.kinds, "globus-partial"])
        if kind == "globus-partial" and shipped:
            paths = [f"/{rel}" for rel in self.rng.sample(shipped, min(3, len(shipped)))]
            self.globus.fail_paths(*paths)
            self.failing.append((time.monotonic(), paths))
        elif kind != "globus-partial":
            self.kinds[kind]()
        self.fired[kind] += 1

    def _flaky(self) -> None:
        """Clowder fails at random for a while: 5% 5xx, 2% resets, 1% answers lost after the
        change was made."""
        self.clowder.faults.mix(self.rng.randrange(2**32), error=0.05, reset=0.02, lost=0.01)
        self.flaky_since = time.monotonic()

    def heal(self) -> None:
        """An operator's part: failing paths become readable again, INACTIVE tasks are resumed,
        a flaky Clowder is calm again after 10 s."""
        if self.flaky_since is not None and time.monotonic() - self.flaky_since > FLAKY_S:
            self.clowder.faults.calm()
            self.flaky_since = None
        # Each partial failure heals 5 s after it began, however many overlap.
        while self.failing and time.monotonic() - self.failing[0][0] > 5.0:
            self.globus.heal_paths(*self.failing.pop(0)[1])
        for task_id in self.globus.task_ids():
            if task_id not in self.resumed and self.globus.task(task_id)["status"] == "INACTIVE":
                self.resumed.add(task_id)
                self.globus.resume_task(task_id)
