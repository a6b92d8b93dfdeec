"""The plumbing the embedded SQLite backends share: one connection, used from a worker
thread one call at a time (a trio.Lock), WAL journal, and the schema created on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, ClassVar, TypeVar

import trio

T = TypeVar("T")


class SqliteBacked:
    """Base of a SQLite-backed store: subclasses set SCHEMA (and SYNCHRONOUS if not FULL)."""

    SCHEMA: ClassVar[str] = ""
    SYNCHRONOUS: ClassVar[str] = "FULL"  # every commit is durable when the call returns

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    async def open(self) -> None:
        """Open (and create if needed) the database."""

        def _open() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.SYNCHRONOUS}")
            db.executescript(self.SCHEMA)
            return db

        self._db = await trio.to_thread.run_sync(_open)

    async def close(self) -> None:
        """Close the database; further calls fail."""
        if self._db is not None:
            async with self._lock:
                db, self._db = self._db, None
                await trio.to_thread.run_sync(db.close)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        async with self._lock:
            return await trio.to_thread.run_sync(work, db)

    async def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one IMMEDIATE transaction (rolled back if it raises)."""

        def run(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._run(run)
