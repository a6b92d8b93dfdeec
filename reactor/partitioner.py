"""Kafka's default partitioner: murmur2 of the key, made positive, modulo the partitions.

A byte-exact port of `org.apache.kafka.common.utils.Utils.murmur2` (seed 0x9747b28c)
and of `toPositive(murmur2(key)) % numPartitions`, so that a key lands on the same
partition in the embedded bus as in a Kafka cluster with the Java client's default
partitioner (and so per-key ordering carries over between the two backends).
"""

from __future__ import annotations

import functools
import struct

_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash of `data` as Kafka computes it: a signed Java int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length // 4
    if whole:
        for k in struct.unpack_from(f"<{whole}I", data):
            k = (k * _M) & _MASK
            k ^= k >> _R
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = length & ~3
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def to_positive(number: int) -> int:
    """Kafka's `Utils.toPositive`: clears the sign bit (not abs(): -2**31 maps to 0)."""
    return number & 0x7FFFFFFF


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return to_positive(murmur2(key)) % partitions


# murmur2 in Python costs ~2-4 us a key, and a node produces for the same users again and again: the embedded bus
# asks this cache (the Kafka bus keeps one of its own, reactor/backends/kafka/bus.py). 65,536 keys: a few MB at most.
cached_partition = functools.lru_cache(maxsize=65_536)(kafka_partition)
