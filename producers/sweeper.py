"""The sweeper: finds cache files that never made it into the pipeline, and files stuck in it.

At start and every ``interval_s`` it walks the whitelisted part of the cache. A regular file older
than ``min_age_s`` whose version has no record in files.state (or only an ARRIVED one, an older
version, or a MISSING record: logged while it was not in the cache) is offered again as FileArrived
(source SWEEPER): an upload whose log line was lost or malformed, or a name vsftpd logged
ambiguously, still reaches the destination. It is counted as stage ``requeued`` in
terra_xfer_files_total, never as ``arrived``, so the dashboard's arrivals count each file once. A
version that is batched, in flight or transferred is never re-queued. Files sitting in one
pipeline state longer than ``stuck_after_s`` are reported (MISSING is not one: no stage waits on
it, ``terra-xfer report`` counts it).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator, Sequence
from typing import Any

from consumers.state.view import StateFollower
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.lag import publish_lag
from terra_xfer.sites.cache import path_rules
from terra_xfer.sites.gantry import CachePath, cache_path, file_fields
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.outputs import Output, now_ms
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import FILES_ARRIVED

log = logging.getLogger(__name__)
CHUNK = 1000
GAUGES_EVERY_S = 30.0
FOLLOW_EVERY_S = 5.0
FOLLOW_MAX_RECORDS = 100_000  # more than files.state takes in 5 s at full speed


def walk(root: str, prefixes: tuple[str, ...]) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file under ``root/prefix`` (no symlinks followed, hidden names skipped)."""
    stack = [os.path.join(root, p.rstrip("/")) for p in prefixes]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield os.path.relpath(entry.path, root), st


class Sweeper:
    """Walks the cache on a schedule; ``step`` sweeps when one is due."""

    def __init__(
        self,
        config: Config,
        spec: StageSpec,
        view: StateFollower,
        measured: Sequence[StageSpec] = (),
    ) -> None:
        """``measured``: the consuming stages whose consumer lag the sweeper publishes."""
        self.config = config
        self.view = view
        self.measured = tuple(measured)
        self.rules = path_rules(config)
        # One walker of the cache, wherever it runs: a restart fences its previous incarnation.
        self.kafka = StageKafka(config, spec, transactional_id=config.group(spec.name))
        self.codec = self.kafka.codec
        self.next_run = 0.0
        self.requeued = 0
        self.stuck: dict[str, int] = {}
        self.gauges = metrics.Periodic(GAUGES_EVERY_S, self._publish_gauges)
        # The view follows files.state between walks too, so that a restart, and the next walk,
        # catch up only the last seconds.
        self.following = metrics.Periodic(
            FOLLOW_EVERY_S, self._follow, what="following files.state"
        )

    def _publish_gauges(self) -> None:
        """The oldest untransferred file per state and consumer lag, for the process's /metrics
        (the files per state come from the indexer: this view lets settled files go)."""
        self.view.refresh()
        metrics.observe_oldest(self.view.index)
        publish_lag(self.config, self.measured)

    def _follow(self) -> None:
        self.view.refresh(FOLLOW_MAX_RECORDS)

    def step(self) -> int:
        self.following.maybe()
        self.gauges.maybe()
        if time.monotonic() < self.next_run:
            return 0
        self.next_run = time.monotonic() + self.config.sweeper.interval_s
        self.view.catch_up()
        found = self.sweep()
        self.stuck = self.report_stuck()
        return found

    def sweep(self) -> int:
        """One walk; returns the number of files re-queued."""
        walk_id = f"{now_ms():x}"
        oldest = time.time() - self.config.sweeper.min_age_s
        pending: list[dict[str, Any]] = []
        count = 0
        root = str(self.config.gantry.cache_root)
        for rel, st in walk(root, self.config.gantry.whitelist):
            if st.st_mtime > oldest:
                continue
            where = cache_path(rel, self.rules)
            if not isinstance(where, CachePath):
                continue
            fields = file_fields(where)
            version = f"{st.st_size}:{st.st_mtime_ns}"
            if not self.view.needs_requeue(fields["key"], version):
                continue
            pending.append(self._event(walk_id, fields, st, version))
            if len(pending) >= CHUNK:
                count += self._emit(pending)
                pending = []
        count += self._emit(pending)
        if count:
            log.info(
                "sweeper: re-queued %d file(s) older than %.0f s with no transfer",
                count,
                self.config.sweeper.min_age_s,
            )
        self.requeued += count
        return count

    def _event(
        self, walk_id: str, fields: dict[str, Any], st: os.stat_result, version: str
    ) -> dict[str, Any]:
        return {
            "event_id": f"sweep:{walk_id}:{fields['key']}",
            "version": version,
            **fields,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "source": "SWEEPER",
            "source_ref": f"sweep {walk_id}",
            "logged_ms": None,
            "remote_host": None,
            "username": None,
            "emitted_ms": now_ms(),
            "attempt": 1,
        }

    def _emit(self, events: list[dict[str, Any]]) -> int:
        if not events:
            return 0
        topic = self.config.topic(FILES_ARRIVED)
        self.kafka.commit(
            Output(topic, value["key"], self.codec.encode("FileArrived", value)) for value in events
        )
        for value in events:
            metrics.count_file("requeued", value["sensor"], value["size"])
        return len(events)

    def report_stuck(self) -> dict[str, int]:
        """Files neither DONE nor MISSING whose state has not changed for ``stuck_after_s``,
        counted by state."""
        before = now_ms() - int(self.config.sweeper.stuck_after_s * 1000)
        counts = self.view.index.unsettled_before(before)
        if counts:
            log.warning(
                "sweeper: files stuck longer than %.0f s: %s",
                self.config.sweeper.stuck_after_s,
                ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
            )
        return counts

    def close(self) -> None:
        self.kafka.close()
