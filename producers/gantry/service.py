"""The gantry producer: tails xferlog (or nas.log) and emits one FileArrived per completed upload.

Exactly once: the events made from a chunk of lines and the tailer's checkpoint after that chunk
are committed in ONE Kafka transaction. After a kill -9 the producer's next incarnation (same
transactional id) fences and aborts the old one's open transaction, reads the last committed
checkpoint and goes on from there: no line is lost and none is emitted twice.

The transaction of one chunk is committed on a second thread while the next chunk is parsed, so
parsing (which holds the interpreter) overlaps the wait for the broker's acknowledgements (which
does not). Transactions still commit one at a time, in the order of the log. A failed commit puts
the tailer back at the last committed checkpoint before the error is raised, so the lines after it
are read again by the next step, in this process or the next.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from producers.checkpoints import checkpoint_output, last_checkpoint
from producers.gantry.lines import LineHandler, Rejected, arrival_value
from producers.gantry.paths import PathRules
from producers.gantry.tailer import Checkpoint, TailedLine, Tailer
from schemas.codec import Codec
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import ConfigError
from terra_xfer.kafka import TxProducer
from terra_xfer.stage import Output, now_ms
from terra_xfer.topics import DEADLETTER, FILES_ARRIVED

log = logging.getLogger(__name__)


def path_rules(config: Config) -> PathRules:
    g = config.gantry
    return PathRules(
        cache_root=str(g.cache_root), log_root=g.log_root, whitelist=g.whitelist, site=g.site
    )


@dataclass(frozen=True)
class LogSource:
    """One log the producer follows: its kind and path, and its name in the checkpoint topic."""

    kind: str  # "xferlog" or "nas_log"
    path: str

    @property
    def source_id(self) -> str:
        return f"gantry:{self.kind}:{self.path}"


@dataclass(frozen=True)
class _Chunk:
    """The events of one chunk of lines and the checkpoint after it: one transaction."""

    arrived: list[tuple[str, bytes]]
    other: list[Output]
    checkpoint: Checkpoint
    events: int  # FileArrived events emitted from the start of the log up to the checkpoint


def log_source(config: Config, kind: str) -> LogSource:
    path = config.gantry.xferlog if kind == "xferlog" else config.gantry.nas_log
    if path is None:
        raise ConfigError(f"[gantry] {kind} is not set")
    return LogSource(kind, str(path))


class GantryProducer:
    """Follows one log; ``step`` reads one chunk of lines and commits it with its checkpoint."""

    def __init__(self, config: Config, source: LogSource) -> None:
        self.config = config
        self.source = source
        self.codec = Codec()
        self.handler = LineHandler(path_rules(config), source.kind, config.gantry.timezone)
        # One instance per log: a restart fences its previous incarnation by this id.
        self.producer = TxProducer(config.kafka, config.group(f"gantry-{source.kind}"))
        self.tailer: Tailer | None = None
        self.events = 0
        self.committed: Checkpoint | None = None
        self._committer = ThreadPoolExecutor(1, thread_name_prefix=f"gantry-{source.kind}-commit")
        self._pending: Future[_Chunk] | None = None
        # The last chunk handed to the committer (committed, or in its transaction now).
        self._sent: Checkpoint | None = None
        self._sent_events = 0

    def start(self) -> None:
        """Fence the previous incarnation and place the tailer at the last committed checkpoint."""
        if self.tailer is not None:
            return
        self.producer.init()
        stored = last_checkpoint(self.config, self.source.source_id)
        checkpoint = Checkpoint.from_dict(stored["position"]) if stored else None
        self.events = int(stored["events"]) if stored else 0
        self.committed = checkpoint
        self._rewind()
        where = f"{checkpoint.name}@{checkpoint.offset}" if checkpoint else "the start of the log"
        log.info("gantry %s: following %s from %s", self.source.kind, self.source.path, where)

    def step(self) -> int:
        """Read up to ``chunk_lines`` lines and start committing their events with the checkpoint
        after them; the previous chunk's transaction is finished first. Returns the lines read.

        A chunk's events are committed when the next step returns (0 when there was nothing
        new) or when ``close`` returns. A failed commit raises here, one step later, with the
        tailer already put back at the last committed checkpoint. Raises
        ``CheckpointLostError`` when the committed position is in no log file any more:
        ``terra-xfer gantry reseat`` puts it somewhere an operator chooses.
        """
        self.start()
        assert self.tailer is not None
        try:
            lines = self.tailer.read(self.config.gantry.chunk_lines)
            checkpoint = self.tailer.checkpoint
            metrics.observe_tailer(
                self.source.kind, self.source.path, checkpoint, self.handler.rules.cache_root
            )
            if not lines and checkpoint == self._sent:
                self._settle()
                return 0
            arrived, other = self._outputs(lines)
            events = self._sent_events + len(arrived)
            state = checkpoint.to_dict()
            other.append(
                checkpoint_output(self.config, self.codec, self.source.source_id, state, events)
            )
            self._settle()
        except BaseException:
            self._abandon()
            raise
        chunk = _Chunk(arrived, other, checkpoint, events)
        self._pending = self._committer.submit(self._commit, chunk)
        self._sent, self._sent_events = checkpoint, events
        return len(lines)

    def _commit(self, chunk: _Chunk) -> _Chunk:
        """One chunk's transaction (on the committer thread)."""
        with self.producer.transaction():
            self.producer.produce_all(self.config.topic(FILES_ARRIVED), chunk.arrived)
            for out in chunk.other:
                self.producer.produce(out.topic, out.value, out.key)
        return chunk

    def _settle(self) -> None:
        """Wait for the chunk in its transaction; when it failed, rewind and raise its error."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            chunk = pending.result()
        except BaseException:
            self._rewind()
            raise
        self.committed, self.events = chunk.checkpoint, chunk.events

    def _abandon(self) -> None:
        """After an error: let the chunk in its transaction finish (or fail), then put the tailer
        back at the last committed checkpoint, dropping whatever was read after it."""
        try:
            self._settle()
        except BaseException as exc:  # the error being raised already says what went wrong
            log.warning("gantry %s: the previous chunk failed too: %s", self.source.kind, exc)
        self._rewind()

    def _rewind(self) -> None:
        """A tailer at the last committed checkpoint: every line after it is read again."""
        if self.tailer is not None:
            self.tailer.close()
        self.tailer = Tailer(self.source.path, self.committed, self.config.gantry.max_line_bytes)
        self._sent, self._sent_events = self.committed, self.events

    def _outputs(self, lines: list[TailedLine]) -> tuple[list[tuple[str, bytes]], list[Output]]:
        """The (key, value) FileArrived events of ``lines``, and their dead letters."""
        arrived: list[tuple[str, bytes]] = []
        dead: list[Output] = []
        sensors: Counter[str | None] = Counter()
        sizes: Counter[str | None] = Counter()
        emitted = now_ms()  # one time per chunk: its events are emitted together
        handle, encode, kind = self.handler.handle, self.codec.encode, self.source.kind
        for line in lines:
            result = handle(line)
            if result is None:
                continue
            if isinstance(result, Rejected):
                dead.append(self._dead_letter(line, result.reason))
                continue
            value = arrival_value(result, line, kind, emitted)
            arrived.append((value["key"], encode("FileArrived", value)))
            sensors[value["sensor"]] += 1
            sizes[value["sensor"]] += value["size"]
        for sensor, files in sensors.items():
            metrics.count_file("arrived", sensor, sizes[sensor], files)
        return arrived, dead

    def _dead_letter(self, line: TailedLine, reason: str) -> Output:
        metrics.count_dead_letter(f"gantry:{self.source.kind}", reason)
        log.warning(
            "gantry %s: %s@%d dead-lettered: %s",
            self.source.kind,
            line.source.name,
            line.offset,
            reason,
        )
        value = {
            "source": f"gantry:{self.source.kind}",
            "reason": reason,
            "raw": line.data,
            "origin": f"{self.source.path} ({line.source.name})",
            "offset": line.offset,
            "partition": None,
            "key": None,
            "emitted_ms": now_ms(),
        }
        return Output(
            self.config.topic(DEADLETTER),
            f"gantry:{self.source.kind}",
            self.codec.encode("DeadLetter", value),
        )

    def reseat(self, checkpoint: Checkpoint) -> None:
        """Commit ``checkpoint`` as this source's position (fencing a running producer)."""
        self.producer.init()
        out = checkpoint_output(
            self.config, self.codec, self.source.source_id, checkpoint.to_dict(), self.events
        )
        with self.producer.transaction():
            self.producer.produce(out.topic, out.value, out.key)
        log.info(
            "gantry %s: re-seated at %s@%d", self.source.kind, checkpoint.name, checkpoint.offset
        )

    def close(self) -> None:
        """Finish the chunk in its transaction (a failure is logged: the next incarnation reads
        those lines again), then close the log and the producer."""
        try:
            self._settle()
        except Exception as exc:
            log.warning("gantry %s: last chunk not committed: %s", self.source.kind, exc)
        finally:
            self._committer.shutdown()
            if self.tailer is not None:
                self.tailer.close()
            self.producer.close()
