"""The PostgreSQL KeyStore: API keys (a SHA-256 digest of each secret, never the secret), as embedded/key_store.py."""

from __future__ import annotations

from typing import Any

from reactor.ports import StoredKey

from .migrations import Migration, migrate
from .pool import Pool

COMPONENT = "keys"

MIGRATIONS = (
    Migration(1, "api_keys", ("""CREATE TABLE api_keys (
        key_id TEXT COLLATE "C" PRIMARY KEY,
        digest BYTEA NOT NULL,
        scopes TEXT[] NOT NULL,
        name TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        revoked_ms BIGINT,
        last_used_ms BIGINT,
        rate_per_s DOUBLE PRECISION,
        burst DOUBLE PRECISION,
        bootstrap BOOLEAN NOT NULL DEFAULT false
    )""",)),
)

_COLUMNS = "key_id, digest, scopes, name, created_ms, revoked_ms, last_used_ms, rate_per_s, burst, bootstrap"


def _key(row: Any) -> StoredKey:
    return StoredKey(str(row[0]), bytes(row[1]), tuple(row[2]), str(row[3]), int(row[4]), row[5], row[6], row[7], row[8], bool(row[9]))


class PostgresKeyStore:
    """The KeyStore port on a schema of a PostgreSQL database."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def open(self) -> None:
        await migrate(self._pool, COMPONENT, MIGRATIONS)

    async def close(self) -> None:
        """Nothing of its own: the pool is closed by whoever opened it."""

    async def add_key(self, key: StoredKey) -> bool:
        values = (key.key_id, key.digest, list(key.scopes), key.name, key.created_ms, key.revoked_ms, key.last_used_ms, key.rate_per_s,
                  key.burst, key.bootstrap)
        return await self._pool.run(lambda c: c.execute(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES (%s, %s, %s::text[], %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", values
        ).rowcount == 1)

    async def get_key(self, key_id: str) -> StoredKey | None:
        row = await self._pool.autocommit(lambda c: c.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,)).fetchone())
        return None if row is None else _key(row)

    async def list_keys(self) -> list[StoredKey]:
        rows = await self._pool.autocommit(lambda c: c.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_ms, key_id").fetchall())
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str, at_ms: int) -> StoredKey | None:
        row = await self._pool.run(lambda c: c.execute(
            f"UPDATE api_keys SET revoked_ms = coalesce(revoked_ms, %s) WHERE key_id = %s RETURNING {_COLUMNS}", (at_ms, key_id)
        ).fetchone())
        return None if row is None else _key(row)

    async def touch_key(self, key_id: str, at_ms: int) -> None:
        await self._pool.autocommit(lambda c: c.execute(
            "UPDATE api_keys SET last_used_ms = %s WHERE key_id = %s AND (last_used_ms IS NULL OR last_used_ms < %s)", (at_ms, key_id, at_ms)
        ))
