"""Reading topics back in tests: everything committed so far, decoded."""

from __future__ import annotations

import time
from typing import Any

from schemas.codec import Codec
from terra_xfer.config import KafkaConfig
from terra_xfer.reading import read_to_end


def read_all(
    kafka: KafkaConfig, topic: str, timeout_s: float = 60.0
) -> list[tuple[str, dict[str, Any]]]:
    """Every committed event of ``topic`` up to its end now, as (record name, value)."""
    codec = Codec()
    return [
        codec.decode(m.value() or b"")
        for m in read_to_end(kafka, topic, timeout_s)
        if m.value() is not None
    ]


def wait_for(
    predicate: Any, timeout_s: float = 60.0, interval_s: float = 0.2, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(interval_s)


def env_for(config: Any) -> dict[str, str]:
    """Environment variables that make a subprocess use ``config`` (top-level scalars only)."""
    import dataclasses

    env: dict[str, str] = {}
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        for fld in dataclasses.fields(value):
            item = getattr(value, fld.name)
            if dataclasses.is_dataclass(item) or item is None or fld.metadata.get("secret"):
                continue
            name = f"TERRA_XFER_{section.name}_{fld.name}".upper()
            env[name] = ",".join(item) if isinstance(item, tuple) else str(item)
    return env


def wait_group_empty(kafka: KafkaConfig, group: str, timeout_s: float = 60.0) -> None:
    """Wait until ``group`` has no member: a stopped stage's static member keeps its place until
    its session times out, and Kafka resets a group's offsets only when it is empty."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    from terra_xfer.kafka import client_config

    admin = AdminClient(client_config(kafka))

    def empty() -> bool:
        found = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
        return found.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)

    wait_for(empty, timeout_s, what=f"consumer group {group} to be empty")
