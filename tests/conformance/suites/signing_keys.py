"""The SigningKeyStore port's conformance checks (reactor/ports.py, SigningKeyStore).

What its callers rely on (actors/services/credentials.py): no ring until one is written;
a write replaces the whole ring (a retired key is gone for good), keeps the keys' order
and the current kid, and is read back the same after a restart.
"""

from __future__ import annotations

from typing import Any

from protocol.keys import SigningKey
from tests.conformance.backends import Harness

OLD = SigningKey("k1", bytes(range(32)), 1000)
NEW = SigningKey("k2", bytes(range(32, 64)), 2000)
NEWER = SigningKey("k3", b"\x00" * 32, 3000)


async def check_no_ring_until_one_is_written(h: Harness[Any]) -> None:
    async with h.open() as rings:
        assert await rings.read_ring() is None
        await rings.write_ring([OLD], "k1")
        assert await rings.read_ring() == ([OLD], "k1")


async def check_a_write_replaces_the_whole_ring_in_order(h: Harness[Any]) -> None:
    async with h.open() as rings:
        await rings.write_ring([OLD, NEW], "k2")
        assert await rings.read_ring() == ([OLD, NEW], "k2")
        await rings.write_ring([NEW, NEWER], "k3")  # k1 retired
        assert await rings.read_ring() == ([NEW, NEWER], "k3")
        await rings.write_ring([NEW, NEWER], "k2")  # only the current one changes
        assert await rings.read_ring() == ([NEW, NEWER], "k2")


async def check_the_ring_survives_a_restart(h: Harness[Any]) -> None:
    async with h.open() as rings:
        await rings.write_ring([OLD, NEW], "k1")
    async with h.open() as rings:
        assert await rings.read_ring() == ([OLD, NEW], "k1")
