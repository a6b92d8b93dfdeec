"""The embedded Store backend: SQLite. Holds metadata and secrets for now."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    async def open(self) -> None:
        def _open() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            return db

        self._db = await trio.to_thread.run_sync(_open)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("SqliteStore is not open")
        return self._db

    async def get_meta(self, key: str) -> str | None:
        db = self._conn()
        async with self._lock:
            row = await trio.to_thread.run_sync(lambda: db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone())
        return None if row is None else str(row[0])

    async def put_meta_if_absent(self, key: str, value: str) -> str:
        db = self._conn()

        def _put() -> str:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return str(db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

        async with self._lock:
            return await trio.to_thread.run_sync(_put)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            async with self._lock:
                await trio.to_thread.run_sync(db.close)
