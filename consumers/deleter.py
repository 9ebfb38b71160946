"""The deleter: removes a file from the cache once its copy is verified at the destination.

Consumes files.transferred. Every decision, removal or refusal, is a FileDeleted event with its
evidence (size, mtime, checksum, destination confirmation); a refusal is an event, never an
exception, so one odd file does not stop the others. Replays are safe: a file already removed is
ALREADY_GONE, and a newer version uploaded under the same path is refused as changed.

The destination is confirmed against the checksum the event carries, which the cache file is
checked against too; for a large file the two checks read at once, the destination's on a second
thread, and both are done before anything is removed.

A consumed batch is removed a cache directory at a time (see consumers.deletion): each directory
is opened once and fsynced once, and its FileDeleted events, in the batch's order, are produced
only after that fsync.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from consumers.batch_records import on_disk
from consumers.deletion import Decision, Request, delete_batch
from consumers.transfer.base import TransferBackend, TransferItem
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError
from terra_xfer.sites.cache import SiteFile, Sites
from terra_xfer.stages.consume_loop import TransactionalLoop
from terra_xfer.stages.outputs import Decoded, Output, now_ms
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import FILES_DELETED

log = logging.getLogger(__name__)
# A file at least this large has its destination confirmed on a second thread while the cache
# file is checked; below it the hand-off costs more than it saves.
OVERLAP_BYTES = 1 << 20


class Confirmation(AbstractContextManager["Confirmation"]):
    """The destination check of one file, run at most once.

    For a large file (given the confirmer) it starts on the confirmer thread when entered, while
    the cache file is checked, and leaving waits for it: the backend serves one check at a time.
    Otherwise, or if never entered, it runs on the caller's thread when first asked.
    """

    def __init__(self, check: Callable[[], bool], confirmer: ThreadPoolExecutor | None) -> None:
        self._check = functools.cache(check)
        self._confirmer = confirmer
        self._pending: Future[bool] | None = None

    def __enter__(self) -> Confirmation:
        if self._confirmer is not None:
            self._pending = self._confirmer.submit(self._check)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pending is not None:
            self._pending.exception()

    def __call__(self) -> bool:
        if self._pending is not None:
            return self._pending.result()
        return self._check()


class Deleter:
    """One deleter (its own consumer group on files.transferred)."""

    def __init__(self, config: Config, spec: StageSpec, backend: TransferBackend) -> None:
        self.config = config
        self.backend = backend
        self.sites = Sites(config)
        self.loop = TransactionalLoop(config, spec, self._handle, batch_size=200)
        self.deleted = 0
        self.refused = 0
        self._confirmer = ThreadPoolExecutor(1, thread_name_prefix="deleter-confirm")

    def step(self) -> int:
        return self.loop.step()

    def _handle(self, batch: Sequence[Decoded]) -> list[Output]:
        events = [d.value for d in batch if d.record == "FileTransferred"]
        decisions = self._delete(events)
        return [self._decide(e, d) for e, d in zip(events, decisions, strict=True)]

    def _decide(self, event: dict[str, Any], decision: Decision) -> Output:
        if decision.outcome == "REFUSED":
            self.refused += 1
            log.warning("%s: deletion refused: %s", event["key"], decision.reason)
        elif decision.outcome == "DELETED":
            self.deleted += 1
            sensor = self.sites.sensor(event["key"], event["path"])
            metrics.count_file("deleted", sensor, event["size"])
        value = {
            "key": event["key"],
            "version": event["version"],
            "path": event["path"],
            "outcome": decision.outcome,
            "reason": decision.reason,
            "size": decision.size,
            "mtime_ns": decision.mtime_ns,
            "checksum": decision.checksum,
            "destination_confirmed": decision.destination_confirmed,
            "removed_dirs": decision.removed_dirs,
            "emitted_ms": now_ms(),
        }
        return Output(
            self.config.topic(FILES_DELETED),
            event["key"],
            self.loop.codec.encode("FileDeleted", value),
        )

    def _delete(self, events: Sequence[dict[str, Any]]) -> list[Decision]:
        """The decision for each event, in order; the cache files go a directory at a time."""
        decided: dict[int, Decision] = {}
        requests: list[tuple[int, Confirmation, Request]] = []
        for i, event in enumerate(events):
            where = self.sites.site_file(event["key"], on_disk(event))
            if not isinstance(where, SiteFile):
                decided[i] = Decision("REFUSED", f"not a shipped cache path: {where.reason}")
                continue
            confirmation = self._confirmation(event, where)
            request = Request(
                str(where.root),
                where.rel,
                event["size"],
                event["mtime_ns"],
                event.get("checksum"),
                event.get("checksum_algorithm"),
                confirmation,
                where.keep_depth,
            )
            requests.append((i, confirmation, request))
        dry_run = self.config.deleter.dry_run
        decisions = delete_batch([request for _, _, request in requests], dry_run)
        for (i, confirmation, _), decision in zip(requests, decisions, strict=True):
            if decision.outcome == "ALREADY_GONE":
                decision = self._gone(events[i], confirmation())
            decided[i] = decision
        return [decided[i] for i in range(len(events))]

    def _confirmation(self, event: dict[str, Any], where: SiteFile) -> Confirmation:
        """The destination check of the event's file against the event's checksum."""
        item = TransferItem(
            event["key"],
            str(where.root / where.rel),
            event["dest_path"],
            event["size"],
            event["mtime_ns"],
        )

        def check() -> bool:
            try:
                outcome = self.backend.confirm(
                    item, event.get("checksum"), event.get("checksum_algorithm")
                )
            except (PermanentError, OSError) as exc:  # not confirmed: say why, refuse
                log.warning("%s: destination check failed: %s", event["key"], exc)
                return False
            if not outcome.ok:
                log.warning("%s: destination not confirmed: %s", event["key"], outcome.reason)
            return outcome.ok

        return Confirmation(check, self._confirmer if item.size >= OVERLAP_BYTES else None)

    def _gone(self, event: dict[str, Any], confirmed: bool) -> Decision:
        """A file already gone records the destination's state instead of the source's.

        The usual cause is this deleter's own earlier incarnation: it removed the file after
        verifying it, then stopped before its record was committed; the copy is checked again so
        the record still shows the file was safe.
        """
        if not confirmed:
            log.error("%s left the cache without a confirmed destination copy", event["key"])
        return Decision(
            "ALREADY_GONE",
            None if confirmed else "gone from the cache; destination copy not confirmed",
            checksum=event.get("checksum"),
            size=event["size"],
            mtime_ns=event["mtime_ns"],
            destination_confirmed=confirmed,
        )

    def close(self) -> None:
        try:
            self.loop.close()
        finally:
            self._confirmer.shutdown(wait=True)
