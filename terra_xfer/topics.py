"""The topic catalogue: every topic's name, partitions and configs, in one place.

Topics keyed by the file key are co-partitioned (same partition count, same partitioner), so every
event of one file lands on the same partition number everywhere and the state keeper can fold one
partition's events without seeing the others.

Compaction settings, on purpose:
- ``min.compaction.lag.ms`` keeps each new record uncompacted for a while, so a reader catching up
  (status index, batcher's "already transferred" view) still sees every recent transition, not only
  the last one; for checkpoints it keeps the previous position readable while the new one settles.
- ``delete.retention.ms`` keeps tombstones for a day, so a consumer that lags less than that still
  learns that a key was removed before the tombstone itself is cleaned away.
- ``segment.ms`` rolls the active segment so compaction (which never touches the active segment)
  actually runs on a quiet topic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from terra_xfer.config import EVENT_RETENTION_DAYS, Config
from terra_xfer.errors import PermanentError, TransientError
from terra_xfer.kafka_security import client_config

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# File-keyed topics (and batches.submitted, whose records go to the partition of their files): these
# must all have the same partition count.
FILES_ARRIVED = "files.arrived"
BATCHES_SUBMITTED = "batches.submitted"
FILES_TRANSFERRED = "files.transferred"
FILES_INGESTED = "files.ingested"
FILES_DELETED = "files.deleted"
FILES_STATE = "files.state"
CHECKPOINTS = "producer.checkpoints"
DEADLETTER = "deadletter"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: str
    file_keyed: bool
    configs: Mapping[str, str] = field(default_factory=dict)
    fixed_partitions: int | None = None
    compacted: bool = False

    def partitions(self, default: int) -> int:
        return self.fixed_partitions or default


_EVENTS = {"cleanup.policy": "delete", "retention.ms": str(EVENT_RETENTION_DAYS * DAY_MS)}
_STATE = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": str(HOUR_MS),
    "delete.retention.ms": str(DAY_MS),
    "segment.ms": str(HOUR_MS),
    "min.cleanable.dirty.ratio": "0.25",
}
_CHECKPOINT = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "60000",
    "delete.retention.ms": str(DAY_MS),
    "segment.ms": str(HOUR_MS),
}

CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(FILES_ARRIVED, "file key", "FileArrived | FileMissing", True, _EVENTS),
    TopicSpec(
        BATCHES_SUBMITTED,
        "batch id",
        "BatchSubmitted",
        False,
        {**_EVENTS, "max.message.bytes": str(8 * 1024 * 1024)},
    ),
    TopicSpec(FILES_TRANSFERRED, "file key", "FileTransferred | FileTransferFailed", True, _EVENTS),
    TopicSpec(FILES_INGESTED, "file key", "FileIngested | FileIngestFailed", True, _EVENTS),
    TopicSpec(FILES_DELETED, "file key", "FileDeleted", True, _EVENTS),
    TopicSpec(FILES_STATE, "file key", "FileState", True, _STATE, compacted=True),
    TopicSpec(
        CHECKPOINTS, "source", "Checkpoint", False, _CHECKPOINT, fixed_partitions=1, compacted=True
    ),
    TopicSpec(
        DEADLETTER,
        "source",
        "DeadLetter",
        False,
        {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
        fixed_partitions=1,
    ),
)


def spec(name: str) -> TopicSpec:
    return next(s for s in CATALOGUE if s.name == name)


@dataclass(frozen=True)
class TopicResult:
    topic: str
    partitions: int
    created: bool
    updated_configs: tuple[str, ...]


def create_topics(
    config: Config, admin: AdminClient | None = None, timeout_s: float = 30.0
) -> list[TopicResult]:
    """Create missing topics and bring existing ones' configs in line; safe to run any number of times."""
    admin = admin or AdminClient(admin_config(config))
    existing = _existing_partitions(admin, timeout_s)
    wanted = [(config.topic(s.name), s) for s in CATALOGUE]
    missing = [
        NewTopic(name, s.partitions(config.kafka.partitions), 1, config=dict(s.configs))
        for name, s in wanted
        if name not in existing
    ]
    created = set()
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
            try:
                future.result()
                created.add(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TransientError(f"could not create topic {name}: {exc}") from exc
        existing = _existing_partitions(admin, timeout_s)
    results = []
    for name, s in wanted:
        want = s.partitions(config.kafka.partitions)
        have = existing.get(name)
        if have is not None and have != want:
            raise PermanentError(
                f"topic {name} has {have} partitions but the catalogue wants {want}; keyed topics must "
                "keep their partition count (changing it moves keys): recreate the topics or set "
                f"[kafka] partitions = {have}"
            )
        updated = () if name in created else _align_configs(admin, name, s.configs, timeout_s)
        results.append(TopicResult(name, want, name in created, updated))
    return results


def _existing_partitions(admin: AdminClient, timeout_s: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TransientError(f"the broker did not answer a metadata request: {exc}") from exc
    return {name: len(t.partitions) for name, t in metadata.topics.items()}


def _align_configs(
    admin: AdminClient, topic: str, wanted: Mapping[str, str], timeout_s: float
) -> tuple[str, ...]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    current = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result()
    differ = {k: v for k, v in wanted.items() if k not in current or current[k].value != v}
    if not differ:
        return ()
    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in differ.items()
    ]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    admin.incremental_alter_configs([resource], request_timeout=timeout_s)[resource].result()
    log.info("topic %s: configs updated: %s", topic, ", ".join(sorted(differ)))
    return tuple(sorted(differ))


def admin_config(config: Config) -> dict[str, Any]:
    return client_config(config.kafka)
