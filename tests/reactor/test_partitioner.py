"""murmur2 and the default partitioner, byte-exact with Kafka's Java client."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor.partitioner import kafka_partition, murmur2, to_positive

# org.apache.kafka.common.utils.UtilsTest#testMurmur2
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]
# Akka's Murmur2Spec, computed with Kafka's implementation: every tail length 1..3 and 0.
AKKA_VECTORS = [
    (b"1", -1993445489),
    (b"12", 126087238),
    (b"123", -267702483),
    (b"1234", -1614185708),
    (b"12345", -1188365604),
]


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS + AKKA_VECTORS)
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS + AKKA_VECTORS)
def test_partition_is_to_positive_modulo(key: bytes, expected: int) -> None:
    for partitions in (1, 3, 12, 100):
        assert kafka_partition(key, partitions) == (expected & 0x7FFFFFFF) % partitions


def test_to_positive_clears_the_sign_bit_like_java() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0  # not abs(): Java's Integer.MIN_VALUE & 0x7fffffff
    assert to_positive(5) == 5
    assert kafka_partition(b"foobar", 7) == (2**31 - 790332482) % 7


def test_partitions_must_be_positive() -> None:
    with pytest.raises(ValueError):
        kafka_partition(b"k", 0)


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=1000))
def test_hash_is_a_signed_int_and_partition_in_range(key: bytes, partitions: int) -> None:
    h = murmur2(key)
    assert -(2**31) <= h < 2**31
    assert murmur2(bytes(key)) == h
    assert 0 <= kafka_partition(key, partitions) < partitions
