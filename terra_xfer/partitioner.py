"""Which partition a key lands on: Kafka's murmur2 partitioner, as the Java client computes it.

Every producer here is configured with librdkafka's ``murmur2_random`` partitioner (see
:mod:`terra_xfer.kafka`), which places a keyed record exactly where Kafka's Java clients, Kafka
Streams and the console tools do: ``toPositive(murmur2(key)) % partitions``. The state keeper uses
it to check that every record it folds belongs to a file its partitions own.
"""

from __future__ import annotations

import struct
from functools import lru_cache

SEED = 0x9747B28C
M = 0x5BD1E995
MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of ``data``, as a signed Java int."""
    length = len(data)
    h = (SEED ^ length) & MASK
    whole = length >> 2
    for k in struct.unpack_from(f"<{whole}I", data):  # the little-endian 4-byte words
        k = (k * M) & MASK
        k ^= k >> 24
        h = ((h * M) & MASK) ^ ((k * M) & MASK)
    tail = length & 3
    base = whole << 2
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * M) & MASK
    h ^= h >> 13
    h = (h * M) & MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=1 << 16)  # a file's key is checked once per event, five or more times
def partition_of(key: str | bytes, partitions: int) -> int:
    """The partition a record keyed ``key`` lands on among ``partitions``."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions
