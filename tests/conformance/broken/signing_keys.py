"""Deliberately broken SigningKeyStores: each is the embedded one with one mistake a backend of the key ring could make."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from protocol.keys import SigningKey
from reactor.backends.embedded import SigningKeyFile
from tests.conformance.backends import Factory, Place


class MergesInsteadOfReplacing(SigningKeyFile):
    """Adds the new keys to the old ones: a retired key stays usable."""

    async def write_ring(self, keys: Sequence[SigningKey], current: str) -> None:
        found = await self.read_ring()
        old = [] if found is None else [k for k in found[0] if k.kid not in {n.kid for n in keys}]
        await super().write_ring([*old, *keys], current)


class KeysNewestFirst(SigningKeyFile):
    async def read_ring(self) -> tuple[list[SigningKey], str] | None:
        found = await super().read_ring()
        return None if found is None else (sorted(found[0], key=lambda k: -k.created_ms), found[1])


class CurrentIsTheNewestKey(SigningKeyFile):
    """Takes the newest key for the current one instead of storing which one is current."""

    async def read_ring(self) -> tuple[list[SigningKey], str] | None:
        found = await super().read_ring()
        return None if found is None else (found[0], max(found[0], key=lambda k: k.created_ms).kid)


class OnlyInMemory(SigningKeyFile):
    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self._ring: tuple[list[SigningKey], str] | None = None

    async def read_ring(self) -> tuple[list[SigningKey], str] | None:
        return self._ring

    async def write_ring(self, keys: Sequence[SigningKey], current: str) -> None:
        self._ring = (list(keys), current)


def _file(kind: type[SigningKeyFile]) -> Factory[Any]:
    @asynccontextmanager
    async def open_(place: Place) -> AsyncIterator[SigningKeyFile]:
        yield kind(place.directory / "signing-keys.json")

    return Factory(open_, clock="real")


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: _file(kind) for kind in (MergesInsteadOfReplacing, KeysNewestFirst, CurrentIsTheNewestKey, OnlyInMemory)
}
