"""The SigningKeyStore port's conformance checks (reactor/ports.py, SigningKeyStore).

What its callers rely on (actors/services/credentials.py): no ring until one is written;
a write replaces the whole ring (a retired key is gone for good), keeps the keys' order
and the current kid, and is read back the same after a restart and by another client;
writes are compare-and-set on the ring's version, so of racing writers each version is
written once (two nodes rotating at once both keep their new key).
"""

from __future__ import annotations

from typing import Any

import trio

from protocol.keys import SigningKey
from reactor.ports import KeyRing
from tests.conformance.backends import Harness

K1 = SigningKey("k1", bytes(range(32)), 1000)
K2 = SigningKey("k2", bytes(range(32, 64)), 2000)
K3 = SigningKey("k3", b"\x07" * 32, 3000)


async def write(rings: Any, keys: list[SigningKey], current: str) -> KeyRing:
    """Replace the ring whatever its version (reads the version first), as one node alone does."""
    found = await rings.read_ring()
    written = await rings.write_ring(keys, current, None if found is None else found.version)
    assert written is not None, "a write at the version just read was refused"
    return written


async def check_no_ring_until_one_is_written(h: Harness[Any]) -> None:
    async with h.open() as rings:
        assert await rings.read_ring() is None
        await write(rings, [K1], "k1")
        assert await rings.read_ring() == KeyRing((K1,), "k1", 1)


async def check_a_write_replaces_the_whole_ring_in_order(h: Harness[Any]) -> None:
    async with h.open() as rings:
        await write(rings, [K1, K2], "k2")
        assert await rings.read_ring() == KeyRing((K1, K2), "k2", 1)
        await write(rings, [K2, K3], "k3")  # k1 retired
        assert await rings.read_ring() == KeyRing((K2, K3), "k3", 2)
        await write(rings, [K2, K3], "k2")  # only the current one changes
        assert await rings.read_ring() == KeyRing((K2, K3), "k2", 3)


async def check_the_ring_survives_a_restart(h: Harness[Any]) -> None:
    async with h.open() as rings:
        await write(rings, [K1, K2], "k1")
    async with h.open() as rings:
        assert await rings.read_ring() == KeyRing((K1, K2), "k1", 1)


async def check_a_write_is_compare_and_set_on_the_version(h: Harness[Any]) -> None:
    async with h.open() as rings:
        assert await rings.read_ring() is None
        first = await rings.write_ring([K1], "k1", None)
        assert first == KeyRing((K1,), "k1", 1)
        assert await rings.read_ring() == first
        assert await rings.write_ring([K2], "k2", None) is None  # a first ring exists already
        second = await rings.write_ring([K1, K2], "k2", 1)
        assert second == KeyRing((K1, K2), "k2", 2)
        assert await rings.write_ring([K3], "k3", 1) is None  # stale: nothing written
        assert await rings.read_ring() == second


async def check_another_client_sees_a_write_and_its_version(h: Harness[Any]) -> None:
    async with h.open() as one, h.open() as other:
        await one.write_ring([K1], "k1", None)
        found = await other.read_ring()
        assert found == KeyRing((K1,), "k1", 1)
        assert await other.write_ring([K1, K2], "k2", found.version) is not None
        assert await one.write_ring([K1, K3], "k3", found.version) is None  # the other got in first
        assert await one.read_ring() == KeyRing((K1, K2), "k2", 2)


async def check_racing_writers_each_version_once(h: Harness[Any]) -> None:
    async with h.open() as base:
        await base.write_ring([K1], "k1", None)
    won: list[int] = []

    async def writer(n: int) -> None:
        async with h.open() as rings:
            for _ in range(5):
                found = await rings.read_ring()
                assert found is not None
                key = SigningKey(f"w{n}x{found.version}", bytes([n]) * 32, 5000 + n)
                written = await rings.write_ring([*found.keys, key], key.kid, found.version)
                if written is not None:
                    won.append(written.version)
                    assert written.keys == (*found.keys, key)

    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(writer, n)
    async with h.open() as rings:
        final = await rings.read_ring()
    assert final is not None
    assert sorted(won) == list(range(2, 2 + len(won)))  # every version written once: no write lost another's
    assert final.version == 1 + len(won) and len(final.keys) == 1 + len(won)
