"""A stand-in for the consumer of a files.state follower: it hands out prepared messages, then
the partition's end, as librdkafka's consumer reports them (no broker)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError


class Msg:
    def __init__(self, partition: int, offset: int, key: str, value: bytes | None) -> None:
        self._p, self._o, self._k, self._v = partition, offset, key, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k.encode()

    def value(self) -> bytes | None:
        return self._v


class End:
    """The end of partition 0, as the consumer reports it."""

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._PARTITION_EOF)

    def partition(self) -> int:
        return 0


class Feed:
    """A consumer whose next ``consume`` returns what was queued (then the partition's end)."""

    def __init__(self) -> None:
        self.queued: list[Msg] = []

    def assign(self, partitions: list[Any]) -> None:
        return None

    def consume(self, n: int, timeout: float) -> list[Msg | End]:
        out, self.queued = self.queued, []
        return [*out, End()]

    def close(self) -> None:
        return None
