"""The deleter: removes a file from the cache once its copy is verified at the destination.

Consumes files.transferred. Every decision, removal or refusal, is a FileDeleted event with its
evidence (size, mtime, checksum, destination confirmation); a refusal is an event, never an
exception, so one odd file does not stop the others. Replays are safe: a file already removed is
ALREADY_GONE, and a newer version uploaded under the same path is refused as changed.

The destination is confirmed against the checksum the event carries, which the cache file is
checked against too; for a large file the two checks read at once, the destination's on a second
thread, and both are done before anything is removed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from consumers.batches import on_disk
from consumers.deletion import Decision, delete
from consumers.sites import SiteFile, Sites
from consumers.transfer.base import TransferBackend, TransferItem
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError
from terra_xfer.stage import Decoded, Output, now_ms, transferred_loop
from terra_xfer.topics import FILES_DELETED

log = logging.getLogger(__name__)
GROUP = "deleter"
# A file at least this large has its destination confirmed on a second thread while the cache
# file is checked; below it the hand-off costs more than it saves.
OVERLAP_BYTES = 1 << 20


class Deleter:
    """One deleter (its own consumer group on files.transferred)."""

    def __init__(self, config: Config, backend: TransferBackend) -> None:
        self.config = config
        self.backend = backend
        self.sites = Sites(config)
        self.loop = transferred_loop(config, GROUP, self._handle)
        self.deleted = 0
        self.refused = 0
        self._confirmer = ThreadPoolExecutor(1, thread_name_prefix="deleter-confirm")

    def step(self) -> int:
        return self.loop.step()

    def _handle(self, batch: Sequence[Decoded]) -> list[Output]:
        return [self._decide(d.value) for d in batch if d.record == "FileTransferred"]

    def _decide(self, event: dict[str, Any]) -> Output:
        decision = self._delete(event)
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

    def _delete(self, event: dict[str, Any]) -> Decision:
        where = self.sites.site_file(event["key"], on_disk(event))
        if not isinstance(where, SiteFile):
            return Decision("REFUSED", f"not a shipped cache path: {where.reason}")
        item = TransferItem(
            event["key"],
            str(where.root / where.rel),
            event["dest_path"],
            event["size"],
            event["mtime_ns"],
        )
        confirmed, pending = self._confirmation(item, event)
        try:
            decision = delete(
                str(where.root),
                where.rel,
                event["size"],
                event["mtime_ns"],
                event.get("checksum"),
                event.get("checksum_algorithm"),
                confirmed,
                where.keep_depth,
                dry_run=self.config.deleter.dry_run,
            )
            if decision.outcome == "ALREADY_GONE":
                return self._gone(event, confirmed())
            return decision
        finally:
            if pending is not None:  # the backend serves one check at a time
                pending.exception()

    def _confirmation(
        self, item: TransferItem, event: dict[str, Any]
    ) -> tuple[Callable[[], bool], Future[bool] | None]:
        """The destination check against the event's checksum, as a call giving its answer.

        For a large file it is started at once on the confirmer thread (and its future returned,
        to be waited for); otherwise it runs when first called. Either way it runs once.
        """

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

        if item.size >= OVERLAP_BYTES:
            future = self._confirmer.submit(check)
            return future.result, future
        return functools.cache(check), None

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
