"""Batching windows: pure logic, no Kafka.

Per partition of files.arrived, files accumulate in one open window until it holds ``max_files``,
or ``max_bytes`` (so that a few large files need not wait for a window sized in file counts), or
its oldest file has waited ``max_wait_s``, whichever comes first; the batcher may also close every
open window at once (:meth:`Windows.close_all`) when the transfers are idle. Each closed window
says why it closed (:data:`CLOSED_BY`). A window covers a contiguous range
of offsets of its partition (including messages that yielded no file), so committing
``last_offset + 1`` when the window's batch is recorded is exact. The batch id is derived from the
topic, partition and offset range, so re-forming the same window after a crash gives the same id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Why a window closed: it held max_files, held max_bytes, its oldest file waited max_wait_s, or
# the batcher closed it early because its transfers were idle.
CLOSED_BY = ("files", "bytes", "waited", "idle")


@dataclass(frozen=True)
class BatchItem:
    """One file version to transfer, with the catalog metadata its arrival carried (JSON)."""

    key: str
    version: str
    path: str
    dest_path: str
    size: int
    mtime_ns: int
    attempt: int = 1
    dataset_metadata: str | None = None
    file_metadata: str | None = None
    raw_path: bytes | None = None  # the path's bytes when they are not UTF-8


@dataclass
class Window:
    """The open (or just closed) batch of one partition."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    opened_at: float
    items: dict[tuple[str, str], BatchItem] = field(default_factory=dict)
    bytes: int = 0  # of its distinct items
    closed_by: str = ""  # one of CLOSED_BY once closed

    @property
    def batch_id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.first_offset}-{self.last_offset}"

    @property
    def files(self) -> list[BatchItem]:
        return list(self.items.values())


class Windows:
    """All open windows of one consumer, keyed by partition."""

    def __init__(
        self, topic: str, max_files: int, max_wait_s: float, max_bytes: int | None = None
    ) -> None:
        if max_files < 1:
            raise ValueError("max_files must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.topic = topic
        self.max_files = max_files
        self.max_wait_s = max_wait_s
        self.max_bytes = max_bytes
        self._open: dict[int, Window] = {}
        # partition -> (first, last) offsets consumed with no window open and not yet committed
        self._idle: dict[int, tuple[int, int]] = {}

    def add(self, partition: int, offset: int, item: BatchItem | None, now: float) -> Window | None:
        """Account for the message at ``offset``; return the window if it just became full.

        ``item`` None means the message produced no file (filtered or dead-lettered): its offset still
        belongs to the range so it is committed with the next batch of the partition.
        """
        window = self._open.get(partition)
        if window is None:
            first, _last = self._idle.pop(partition, (offset, offset))
            if item is None:
                self._idle[partition] = (first, offset)
                return None
            window = Window(self.topic, partition, first, offset, now)
            self._open[partition] = window
        window.last_offset = offset
        if item is not None and (item.key, item.version) not in window.items:
            window.items[(item.key, item.version)] = item
            window.bytes += max(0, item.size)
        if len(window.items) >= self.max_files:
            return self._close(partition, "files")
        if self.max_bytes is not None and window.bytes >= self.max_bytes:
            return self._close(partition, "bytes")
        return None

    def due(self, now: float) -> list[Window]:
        """Close and return every window whose oldest file has waited ``max_wait_s``."""
        ready = [p for p, w in self._open.items() if now - w.opened_at >= self.max_wait_s]
        return [self._close(p, "waited") for p in ready]

    def close_all(self) -> list[Window]:
        """Close and return every open window, whatever it holds (the transfers are idle)."""
        return [self._close(p, "idle") for p in list(self._open)]

    def _close(self, partition: int, why: str) -> Window:
        window = self._open.pop(partition)
        window.closed_by = why
        return window

    def seconds_until_due(self, now: float) -> float | None:
        if not self._open:
            return None
        return max(0.0, min(w.opened_at + self.max_wait_s - now for w in self._open.values()))

    def idle_commits(self) -> dict[int, int]:
        """Offsets to commit for partitions with consumed messages but no open window; cleared."""
        done = {p: last + 1 for p, (_first, last) in self._idle.items()}
        self._idle = {}
        return done

    def drop(self, partitions: set[int]) -> None:
        """Forget windows of revoked partitions: their messages will be consumed again elsewhere."""
        for p in partitions:
            self._open.pop(p, None)
            self._idle.pop(p, None)

    @property
    def open_files(self) -> int:
        return sum(len(w.items) for w in self._open.values())
