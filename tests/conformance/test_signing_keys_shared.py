"""SigningKeyStore conformance, the ring shared by several nodes: writes are compare-and-set on the ring's version.

Every check takes `h`, a harness shaped like the shared one (tests/conformance/backends.py):
`h.open()` opens one more client of the same store (a node's connection). The local fixture serves the embedded one (a
SigningKeyFile on one file per client); the shared conformance fixture replaces it at
merge. Broken stores are caught at the end of the file: one that writes whatever the
version, one that does not move the version, one whose compare and write are not atomic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from typing import Any

import pytest
import trio

from protocol.keys import SigningKey
from reactor.backends.embedded import SigningKeyFile
from reactor.backends.embedded.signing_keys import read_signing_keys
from reactor.ports import KeyRing, SigningKeyStore

OpenRings = Callable[[], AbstractAsyncContextManager[SigningKeyStore]]
K1 = SigningKey("k1", bytes(range(32)), 1000)
K2 = SigningKey("k2", bytes(range(32, 64)), 2000)
K3 = SigningKey("k3", b"\x07" * 32, 3000)


def embedded(path: Path, kind: type[SigningKeyFile] = SigningKeyFile) -> OpenRings:
    @asynccontextmanager
    async def open_rings() -> AsyncIterator[SigningKeyStore]:
        yield kind(path)

    return open_rings


@pytest.fixture
def open_rings(tmp_path: Path) -> OpenRings:
    return embedded(tmp_path / "signing-keys.json")


class Harness:
    """What a check is given: the shape of tests/conformance/backends.Harness (`open()`: one more client of the
    same data; `sleep(ticks)`), so the lead can move these checks into the shared suites as they are."""

    def __init__(self, open_: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._open = open_

    def open(self) -> AbstractAsyncContextManager[Any]:
        return self._open()

    async def sleep(self, ticks: float) -> None:
        await trio.sleep(ticks)


# -- the checks


async def check_a_write_is_compare_and_set_on_the_version(h: Harness) -> None:
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


async def check_another_client_sees_a_write_and_its_version(h: Harness) -> None:
    async with h.open() as one, h.open() as other:
        await one.write_ring([K1], "k1", None)
        found = await other.read_ring()
        assert found == KeyRing((K1,), "k1", 1)
        assert await other.write_ring([K1, K2], "k2", found.version) is not None
        assert await one.write_ring([K1, K3], "k3", found.version) is None  # the other got in first
        assert await one.read_ring() == KeyRing((K1, K2), "k2", 2)


async def check_racing_writers_each_version_once(h: Harness) -> None:
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


CHECKS: dict[str, Callable[[Harness], Awaitable[None]]] = {
    name.removeprefix("check_"): check for name, check in globals().items() if name.startswith("check_")
}


@pytest.mark.parametrize("check", CHECKS)
async def test_signing_key_store_shared(open_rings: OpenRings, check: str) -> None:
    await CHECKS[check](Harness(open_rings))


def test_a_file_from_before_versions_reads_as_version_1(tmp_path: Path) -> None:
    path = tmp_path / "signing-keys.json"
    path.write_text('{"version": 1, "current": "k1", "keys": [{"kid": "k1", "secret": "00", "created_ms": 5}]}')
    assert read_signing_keys(path) == KeyRing((SigningKey("k1", b"\x00", 5),), "k1", 1)


# -- broken stores: each is caught


class BlindWrites(SigningKeyFile):
    """Writes whatever the version (the ring before compare-and-set): a concurrent rotation is lost."""

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        return await self.overwrite(keys, current)

    async def overwrite(self, keys: Sequence[SigningKey], current: str) -> KeyRing:
        """Whatever is stored now is replaced (the last writer wins)."""
        while True:
            found = await self.read_ring()
            written = await SigningKeyFile.write_ring(self, keys, current, None if found is None else found.version)
            if written is not None:
                return written


class VersionStandsStill(SigningKeyFile):
    async def read_ring(self) -> KeyRing | None:
        found = await super().read_ring()
        return None if found is None else KeyRing(found.keys, found.current, 1)

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        found = await super().read_ring()
        if (found is not None and expected_version != 1) or (found is None and expected_version is not None):
            return None
        written = await super().write_ring(keys, current, None if found is None else found.version)
        return None if written is None else KeyRing(written.keys, written.current, 1)


class CompareThenWrite(BlindWrites):
    """Compares, yields, then writes without looking again: two writers can both pass the comparison."""

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        found = await self.read_ring()
        if (None if found is None else found.version) != expected_version:
            return None
        await trio.sleep(0.001)
        return await self.overwrite(keys, current)


@pytest.mark.parametrize(
    "broken, check",
    [
        (BlindWrites, "a_write_is_compare_and_set_on_the_version"),
        (BlindWrites, "racing_writers_each_version_once"),
        (VersionStandsStill, "a_write_is_compare_and_set_on_the_version"),
        (CompareThenWrite, "racing_writers_each_version_once"),
    ],
)
async def test_a_broken_signing_key_store_is_caught(tmp_path: Path, broken: type[SigningKeyFile], check: str) -> None:
    with pytest.raises(AssertionError):
        await CHECKS[check](Harness(embedded(tmp_path / "signing-keys.json", broken)))
