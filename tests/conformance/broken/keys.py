"""Deliberately broken KeyStores: each is the embedded one with one mistake a KeyStore backend could make."""

from __future__ import annotations

from typing import Any

import trio

from reactor.backends.embedded import SqliteKeyStore
from reactor.ports import StoredKey
from tests.conformance.backends import Factory, sqlite


class AddReplacesATakenId(SqliteKeyStore):
    async def add_key(self, key: StoredKey) -> bool:
        await self._run(lambda db: db.execute("DELETE FROM api_keys WHERE key_id = ?", (key.key_id,)))
        return await super().add_key(key)


class RacyAdd(SqliteKeyStore):
    """Looks the id up, makes a round trip, then upserts: two adds of one id can both succeed."""

    async def add_key(self, key: StoredKey) -> bool:
        if await self.get_key(key.key_id) is not None:
            return False
        await trio.sleep(0)

        def upsert(db: Any) -> None:
            db.execute("DELETE FROM api_keys WHERE key_id = ?", (key.key_id,))
            db.execute("INSERT INTO api_keys (key_id, digest, scopes, name, created_ms, bootstrap) VALUES (?, ?, ?, ?, ?, 0)",
                       (key.key_id, key.digest, ",".join(key.scopes), key.name, key.created_ms))

        await self._run(upsert)
        return True


class ScopesSorted(SqliteKeyStore):
    async def get_key(self, key_id: str) -> StoredKey | None:
        key = await super().get_key(key_id)
        return None if key is None else StoredKey(key.key_id, key.digest, tuple(sorted(key.scopes)), key.name, key.created_ms,
                                                   key.revoked_ms, key.last_used_ms, key.rate_per_s, key.burst, key.bootstrap)


class ForgetsTheBootstrapFlag(SqliteKeyStore):
    async def add_key(self, key: StoredKey) -> bool:
        return await super().add_key(StoredKey(key.key_id, key.digest, key.scopes, key.name, key.created_ms, key.revoked_ms,
                                               key.last_used_ms, key.rate_per_s, key.burst, False))


class ListedById(SqliteKeyStore):
    async def list_keys(self) -> list[StoredKey]:
        return sorted(await super().list_keys(), key=lambda k: k.key_id)


class ListLeavesOutRevokedKeys(SqliteKeyStore):
    async def list_keys(self) -> list[StoredKey]:
        return [k for k in await super().list_keys() if k.revoked_ms is None]


class RevokeTakesTheLastTime(SqliteKeyStore):
    async def revoke_key(self, key_id: str, at_ms: int) -> StoredKey | None:
        await self._run(lambda db: db.execute("UPDATE api_keys SET revoked_ms = ? WHERE key_id = ?", (at_ms, key_id)))
        return await self.get_key(key_id)


class TouchMovesBack(SqliteKeyStore):
    async def touch_key(self, key_id: str, at_ms: int) -> None:
        await self._run(lambda db: db.execute("UPDATE api_keys SET last_used_ms = ? WHERE key_id = ?", (at_ms, key_id)))


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: sqlite(kind, "keys.sqlite3")
    for kind in (AddReplacesATakenId, RacyAdd, ScopesSorted, ForgetsTheBootstrapFlag, ListedById, ListLeavesOutRevokedKeys,
                 RevokeTakesTheLastTime, TouchMovesBack)
}
