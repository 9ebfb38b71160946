"""The gantry producer: tails xferlog (or nas.log) and emits one FileArrived per completed upload.

An upload logged for a file the cache does not hold is a dead letter, and a FileMissing on
files.arrived under the file's key: the state keeper records the file MISSING with the reason, so
``terra-xfer status`` shows it until a version of it arrives (a later line, or the sweeper).

Exactly once: the events made from a chunk of lines and the tailer's checkpoint after that chunk
are committed in ONE Kafka transaction. After a kill -9 the producer's next incarnation (same
transactional id) fences and aborts the old one's open transaction, reads the last committed
checkpoint and goes on from there: no line is lost and none is emitted twice. A transaction that
fails puts the tailer back at the last committed checkpoint before the error is raised, so a step
retried in the same process reads those lines again too.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from producers.checkpoints import checkpoint_output, last_checkpoint
from producers.gantry.lines import LineHandler, Missing, Rejected, arrival_value, missing_value
from producers.gantry.tailer import Checkpoint, TailedLine, Tailer
from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import ConfigError
from terra_xfer.sites.cache import path_rules
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.outputs import Output, now_ms
from terra_xfer.stages.spec import StageSpec
from terra_xfer.topics import DEADLETTER, FILES_ARRIVED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogSource:
    """One log the producer follows: its kind and path, and its name in the checkpoint topic."""

    kind: str  # "xferlog" or "nas_log"
    path: str

    @property
    def source_id(self) -> str:
        return f"gantry:{self.kind}:{self.path}"


def log_source(config: Config, kind: str) -> LogSource:
    path = config.gantry.xferlog if kind == "xferlog" else config.gantry.nas_log
    if path is None:
        raise ConfigError(f"[gantry] {kind} is not set")
    return LogSource(kind, str(path))


class GantryProducer:
    """Follows one log; ``step`` reads one chunk of lines and commits it with its checkpoint."""

    def __init__(self, config: Config, spec: StageSpec, source: LogSource) -> None:
        self.config = config
        self.source = source
        self.handler = LineHandler(path_rules(config), source.kind, config.gantry.timezone)
        # One writer per log, wherever it runs: a restart fences its previous incarnation by this id.
        self.kafka = StageKafka(
            config, spec, transactional_id=config.group(f"gantry-{source.kind}")
        )
        self.codec = self.kafka.codec
        self.tailer: Tailer | None = None
        self.events = 0
        self.committed: Checkpoint | None = None

    def start(self) -> None:
        """Fence the previous incarnation and place the tailer at the last committed checkpoint."""
        if self.tailer is not None:
            return
        self.kafka.start(on_rewind=self._rewind)
        stored = last_checkpoint(self.config, self.source.source_id)
        checkpoint = Checkpoint.from_dict(stored["position"]) if stored else None
        self.events = int(stored["events"]) if stored else 0
        self.committed = checkpoint
        self.tailer = Tailer(self.source.path, checkpoint, self.config.gantry.max_line_bytes)
        where = f"{checkpoint.name}@{checkpoint.offset}" if checkpoint else "the start of the log"
        log.info("gantry %s: following %s from %s", self.source.kind, self.source.path, where)

    def step(self) -> int:
        """Read up to ``chunk_lines`` lines and commit their events with the checkpoint after them.

        Raises ``CheckpointLostError`` when the committed position is in no log file any more:
        ``terra-xfer gantry reseat`` puts it somewhere an operator chooses.
        """
        self.start()
        assert self.tailer is not None
        with self.kafka.attempt():
            return self._step(self.tailer)

    def _step(self, tailer: Tailer) -> int:
        lines = tailer.read(self.config.gantry.chunk_lines)
        checkpoint = tailer.checkpoint
        metrics.observe_tailer(
            self.source.kind, self.source.path, checkpoint, self.handler.rules.cache_root
        )
        if not lines and checkpoint == self.committed:
            return 0
        arrived, other = self._outputs(lines)
        events = self.events + len(arrived)
        other.append(
            checkpoint_output(
                self.config, self.codec, self.source.source_id, checkpoint.to_dict(), events
            )
        )
        self.kafka.commit(other, bulk=(self.config.topic(FILES_ARRIVED), arrived))
        self.committed, self.events = checkpoint, events
        return len(lines)

    def _rewind(self) -> None:
        """After a failed step: the tailer back at the last committed checkpoint, so the lines
        after it are read again (what was read past it was never committed)."""
        if self.tailer is not None:
            self.tailer.close()
        self.tailer = Tailer(self.source.path, self.committed, self.config.gantry.max_line_bytes)

    def _outputs(self, lines: list[TailedLine]) -> tuple[list[tuple[str, bytes]], list[Output]]:
        """The (key, value) events of ``lines`` for files.arrived, in line order, and their dead
        letters: a FileArrived per upload found, a FileMissing beside the dead letter of one that
        the cache did not hold."""
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
                if isinstance(result, Missing):
                    gone = missing_value(result, line, kind, emitted)
                    arrived.append((gone["key"], encode("FileMissing", gone)))
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
        self.kafka.producer.init()
        out = checkpoint_output(
            self.config, self.codec, self.source.source_id, checkpoint.to_dict(), self.events
        )
        self.kafka.commit([out])
        log.info(
            "gantry %s: re-seated at %s@%d", self.source.kind, checkpoint.name, checkpoint.offset
        )

    def close(self) -> None:
        if self.tailer is not None:
            self.tailer.close()
        self.kafka.close()
