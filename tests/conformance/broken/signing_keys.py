"""Deliberately broken SigningKeyStores: each is the embedded one with one mistake a backend of the key ring could make."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from protocol.keys import SigningKey
from reactor.backends.embedded import SigningKeyFile
from reactor.ports import KeyRing
from tests.conformance.backends import Factory, Place


class MergesInsteadOfReplacing(SigningKeyFile):
    """Adds the new keys to the old ones: a retired key stays usable."""

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        found = await self.read_ring()
        old = [] if found is None else [k for k in found.keys if k.kid not in {n.kid for n in keys}]
        return await super().write_ring([*old, *keys], current, expected_version)


class KeysNewestFirst(SigningKeyFile):
    async def read_ring(self) -> KeyRing | None:
        found = await super().read_ring()
        return None if found is None else KeyRing(tuple(sorted(found.keys, key=lambda k: -k.created_ms)), found.current, found.version)


class CurrentIsTheNewestKey(SigningKeyFile):
    """Takes the newest key for the current one instead of storing which one is current."""

    async def read_ring(self) -> KeyRing | None:
        found = await super().read_ring()
        return None if found is None else KeyRing(found.keys, max(found.keys, key=lambda k: k.created_ms).kid, found.version)


class OnlyInMemory(SigningKeyFile):
    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self._ring: KeyRing | None = None

    async def read_ring(self) -> KeyRing | None:
        return self._ring

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        if (None if self._ring is None else self._ring.version) != expected_version:
            return None
        self._ring = KeyRing(tuple(keys), current, (expected_version or 0) + 1)
        return self._ring


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


def _file(kind: type[SigningKeyFile]) -> Factory[Any]:
    @asynccontextmanager
    async def open_(place: Place) -> AsyncIterator[SigningKeyFile]:
        yield kind(place.directory / "signing-keys.json")

    return Factory(open_, clock="real")


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: _file(kind)
    for kind in (MergesInsteadOfReplacing, KeysNewestFirst, CurrentIsTheNewestKey, OnlyInMemory,
                 BlindWrites, VersionStandsStill, CompareThenWrite)
}
