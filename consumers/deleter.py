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

from consumers.deletion import Decision, delete
from consumers.transfer.base import TransferBackend, TransferItem
from producers.gantry.paths import CachePath, cache_path
from producers.gantry.service import path_rules
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
        self.rules = path_rules(config)
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
            sensor = metrics.sensor_of(cache_path(event["path"], self.rules))
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
        where = cache_path(event["path"], self.rules)
        if not isinstance(where, CachePath):
            return Decision("REFUSED", f"not a shipped cache path: {where.reason}")
        parts = where.rel.split("/")
        stop_depth = parts.index(where.date) if where.date in parts else len(parts) - 1
        item = TransferItem(
            event["key"],
            str(self.config.gantry.cache_root / where.rel),
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

        return delete(
            str(self.config.gantry.cache_root),
            where.rel,
            event["size"],
            event["mtime_ns"],
            event.get("checksum"),
            event.get("checksum_algorithm"),
            confirmed,
            stop_depth,
            dry_run=self.config.deleter.dry_run,
        )

    def close(self) -> None:
        self.loop.close()
