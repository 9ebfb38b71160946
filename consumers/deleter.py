"""The deleter: removes a file from the cache once its copy is verified at the destination.

Consumes files.transferred. Every decision, removal or refusal, is a FileDeleted event with its
evidence (size, mtime, checksum, destination confirmation); a refusal is an event, never an
exception, so one odd file does not stop the others. Replays are safe: a file already removed is
ALREADY_GONE, and a newer version uploaded under the same path is refused as changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


class Deleter:
    """One deleter (its own consumer group on files.transferred)."""

    def __init__(self, config: Config, backend: TransferBackend) -> None:
        self.config = config
        self.backend = backend
        self.sites = Sites(config)
        self.loop = transferred_loop(config, GROUP, self._handle)
        self.deleted = 0
        self.refused = 0

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

        def confirmed() -> bool:
            try:
                return self.backend.confirm(item).ok
            except (PermanentError, OSError) as exc:  # not confirmed: say why, refuse
                log.warning("%s: destination check failed: %s", event["key"], exc)
                return False

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
        self.loop.close()
