"""Kafka's murmur2 partitioner, as the keeper computes it to check which keys it owns."""

from __future__ import annotations

import pytest

from terra_xfer.partitioner import murmur2, partition_of

# Kafka's own vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
JAVA = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA.items())
def test_murmur2_matches_the_java_client(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_a_key_lands_on_the_positive_hash_modulo_the_partitions() -> None:
    # murmur2(b"21") is negative: the sign bit is dropped, not the absolute value taken.
    assert partition_of(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7
    assert partition_of("abc", 6) == 479470107 % 6
    assert partition_of("foobar", 1) == 0


def test_text_keys_are_hashed_as_utf8() -> None:
    key = "ua-mac/LemnaTec/MovingSensor/stereoTop/2017-08-24/é_left.bin"
    assert partition_of(key, 12) == partition_of(key.encode("utf-8"), 12)
