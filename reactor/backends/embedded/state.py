"""The embedded State backend for a node that must remember across restarts.

Keys with TTLs (idempotency records) are kept in SQLite, so a retried request finds
its key after a crash or restart of a single node; token buckets, the gate's shared bucket
and breaker, pub/sub and the recent pushes stay in memory (MemoryState), where losing
them on a restart is harmless (a bucket starts full, a breaker closed, as they do in a
node that starts; a push whose inbox row was not written yet is pushed again: its bus
record was not committed). Expiry is stamped in wall-clock milliseconds
(reactor.clock.wall_ms: the OS wall clock; under MockClock, one moving with it), so it
means the same thing after a restart. WAL with synchronous=NORMAL: a commit survives
kill -9 of the process (not a power cut) without an fsync on the request path.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from reactor.clock import wall_ms

from .memory_state import MemoryState
from .sqlite import SqliteBacked

T = TypeVar("T")
PURGE_EVERY = 1000


class SqliteState(MemoryState, SqliteBacked):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_ms INTEGER);
    CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_ms);
    """
    SYNCHRONOUS = "NORMAL"  # survives kill -9 of the process; no fsync on the request path

    def __init__(self, path: Path) -> None:
        MemoryState.__init__(self)
        SqliteBacked.__init__(self, path)
        self._writes = 0

    @staticmethod
    def _expiry(ttl_s: float | None) -> int | None:
        return None if ttl_s is None else wall_ms() + int(ttl_s * 1000)

    async def put_if_absent(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        now, expires = wall_ms(), self._expiry(ttl_s)

        def put(db: sqlite3.Connection) -> Any:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT value, expires_ms FROM kv WHERE key = ?", (key,)).fetchone()
                if row is not None and (row[1] is None or row[1] > now):
                    db.execute("COMMIT")
                    return bytes(row[0])
                db.execute("INSERT OR REPLACE INTO kv (key, value, expires_ms) VALUES (?, ?, ?)", (key, value, expires))
                db.execute("COMMIT")
                return None
            except BaseException:
                db.execute("ROLLBACK")
                raise

        result: bytes | None = await self._run(put)
        await self._maybe_purge()
        return result

    async def get(self, key: str) -> bytes | None:
        now = wall_ms()
        row = await self._run(lambda db: db.execute("SELECT value, expires_ms FROM kv WHERE key = ?", (key,)).fetchone())
        if row is None or (row[1] is not None and row[1] <= now):
            return None
        return bytes(row[0])

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        expires = self._expiry(ttl_s)
        await self._run(lambda db: db.execute("INSERT OR REPLACE INTO kv (key, value, expires_ms) VALUES (?, ?, ?)", (key, value, expires)))
        await self._maybe_purge()

    async def delete(self, key: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM kv WHERE key = ?", (key,)))

    async def _maybe_purge(self) -> None:
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            now = wall_ms()
            await self._run(lambda db: db.execute("DELETE FROM kv WHERE expires_ms IS NOT NULL AND expires_ms <= ?", (now,)))
