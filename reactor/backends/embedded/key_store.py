"""The embedded KeyStore: API keys in their own SQLite file (`<data_dir>/keys.sqlite3`).

A file of its own so that `herald keys ... --offline` can open it without knowing the
Store's schema, and so that a running node and the offline CLI can share it (WAL, a busy
timeout for the rare concurrent write). Only a digest of each secret is stored, the
generated bootstrap key's too (flagged `bootstrap`). Every write is durable when the
call returns (synchronous=FULL).
"""

from __future__ import annotations

import sqlite3
from typing import Any, TypeVar

from reactor.ports import StoredKey

from .sqlite import SqliteBacked

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    scopes TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    last_used_ms INTEGER,
    rate_per_s REAL,
    burst REAL,
    bootstrap INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

_COLUMNS = "key_id, digest, scopes, name, created_ms, revoked_ms, last_used_ms, rate_per_s, burst, bootstrap"


def _key(row: tuple[Any, ...]) -> StoredKey:
    scopes = tuple(s for s in str(row[2]).split(",") if s)
    return StoredKey(str(row[0]), bytes(row[1]), scopes, str(row[3]), int(row[4]), row[5], row[6], row[7], row[8], bool(row[9]))


class SqliteKeyStore(SqliteBacked):
    SCHEMA = _SCHEMA

    async def open(self) -> None:
        await super().open()

        def add_bootstrap_column(db: sqlite3.Connection) -> None:  # a keys.sqlite3 from before the column
            if "bootstrap" not in {row[1] for row in db.execute("PRAGMA table_info(api_keys)")}:
                db.execute("ALTER TABLE api_keys ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0")

        await self._run(add_bootstrap_column)

    async def add_key(self, key: StoredKey) -> bool:
        """Store a new key; False (and nothing stored) if its key_id is taken."""
        values = (
            key.key_id, key.digest, ",".join(key.scopes), key.name, key.created_ms, key.revoked_ms, key.last_used_ms,
            key.rate_per_s, key.burst, int(key.bootstrap),
        )
        cursor = await self._run(lambda db: db.execute(f"INSERT OR IGNORE INTO api_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", values))
        return bool(cursor.rowcount == 1)

    async def get_key(self, key_id: str) -> StoredKey | None:
        """The key with this id, revoked or not."""
        row = await self._run(lambda db: db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone())
        return None if row is None else _key(row)

    async def list_keys(self) -> list[StoredKey]:
        """Every key, revoked ones included, oldest first."""
        rows = await self._run(lambda db: db.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_ms, key_id").fetchall())
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str, at_ms: int) -> StoredKey | None:
        """Mark the key revoked (a second revoke keeps the first time); the key as now stored, None if unknown."""

        def revoke(db: sqlite3.Connection) -> Any:
            db.execute("UPDATE api_keys SET revoked_ms = ? WHERE key_id = ? AND revoked_ms IS NULL", (at_ms, key_id))
            return db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()

        row = await self._run(revoke)
        return None if row is None else _key(row)

    async def touch_key(self, key_id: str, at_ms: int) -> None:
        """Record that the key was used at `at_ms` (never moves last_used back)."""
        await self._run(lambda db: db.execute(
            "UPDATE api_keys SET last_used_ms = ? WHERE key_id = ? AND (last_used_ms IS NULL OR last_used_ms < ?)",
            (at_ms, key_id, at_ms),
        ))
