"""The embedded UserStore: preferences and push devices in their own SQLite file (`<data_dir>/users.sqlite3`).

WAL with synchronous=FULL: every write is durable when the call returns. One connection
behind a trio.Lock; each call is one hop to a worker thread. A device token belongs to
one user at a time (an app install that signs in as someone else moves its token).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Callable, TypeVar

from reactor.ports import DeviceRow, UserRow

from .sqlite import SqliteBacked

T = TypeVar("T")

USERS_FILE = "users.sqlite3"
_IN_CHUNK = 500  # ids per `IN (...)` (SQLite's default bound on host parameters is 999 on old builds)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS preferences (
    user_id TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    registered_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_by_user ON devices (user_id, registered_ms);
"""


def _device(row: tuple[Any, ...]) -> DeviceRow:
    return DeviceRow(user_id=str(row[0]), platform=str(row[1]), token=str(row[2]), registered_ms=int(row[3]))


def _devices_of(db: sqlite3.Connection, user_id: str) -> list[DeviceRow]:
    rows = db.execute(
        "SELECT user_id, platform, token, registered_ms FROM devices WHERE user_id = ? ORDER BY registered_ms, token", (user_id,)
    ).fetchall()
    return [_device(r) for r in rows]


class SqliteUserStore(SqliteBacked):
    SCHEMA = _SCHEMA

    # -- preferences

    async def get_preferences(self, user_id: str) -> bytes | None:
        """The user's stored preferences document, None if never set."""
        row = await self._run(lambda db: db.execute("SELECT document FROM preferences WHERE user_id = ?", (user_id,)).fetchone())
        return None if row is None else bytes(row[0])

    async def put_preferences(self, user_id: str, document: bytes, at_ms: int) -> None:
        """Replace the user's preferences document."""
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO preferences (user_id, document, updated_ms) VALUES (?, ?, ?)", (user_id, document, at_ms)
        ))

    async def update_preferences(self, user_id: str, change: Callable[[bytes | None], bytes], at_ms: int) -> bytes:
        """Atomically replace the document with change(current); returns the new one."""

        def update(db: sqlite3.Connection) -> bytes:
            row = db.execute("SELECT document FROM preferences WHERE user_id = ?", (user_id,)).fetchone()
            document = change(None if row is None else bytes(row[0]))
            db.execute(
                "INSERT OR REPLACE INTO preferences (user_id, document, updated_ms) VALUES (?, ?, ?)", (user_id, document, at_ms)
            )
            return document

        return await self._transaction(update)

    # -- devices

    async def add_device(self, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
        """Register (or move, or refresh) a token; past max_per_user the oldest go.

        Returns the registrations it displaced: the token's own if another user had it,
        and the user's oldest devices evicted to stay within max_per_user.
        """

        def add(db: sqlite3.Connection) -> list[DeviceRow]:
            sql = "SELECT user_id, platform, token, registered_ms FROM devices WHERE token = ?"
            row = db.execute(sql, (device.token,)).fetchone()
            moved = [_device(row)] if row is not None and row[0] != device.user_id else []
            db.execute(
                "INSERT OR REPLACE INTO devices (token, user_id, platform, registered_ms) VALUES (?, ?, ?, ?)",
                (device.token, device.user_id, device.platform, device.registered_ms),
            )
            current = _devices_of(db, device.user_id)
            evicted = [d for d in current if d.token != device.token][: max(0, len(current) - max_per_user)]
            db.executemany("DELETE FROM devices WHERE token = ?", [(d.token,) for d in evicted])
            return moved + evicted

        return await self._transaction(add)

    async def remove_device(self, user_id: str, token: str) -> bool:
        """Forget the user's token; False if the user had no such token."""
        cursor = await self._run(lambda db: db.execute("DELETE FROM devices WHERE token = ? AND user_id = ?", (token, user_id)))
        return bool(cursor.rowcount)

    async def devices(self, user_id: str) -> list[DeviceRow]:
        """The user's devices, oldest registration first."""
        return await self._run(lambda db: _devices_of(db, user_id))

    async def users(self, user_ids: Sequence[str]) -> dict[str, UserRow]:
        """Many users' preferences and devices in one hop to the thread (two queries per 500 ids)."""
        wanted = list(dict.fromkeys(user_ids))

        def read(db: sqlite3.Connection) -> dict[str, UserRow]:
            documents: dict[str, bytes] = {}
            devices: dict[str, list[DeviceRow]] = {}
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                for user_id, document in db.execute(f"SELECT user_id, document FROM preferences WHERE user_id IN ({marks})", chunk):
                    documents[str(user_id)] = bytes(document)
                rows = db.execute(
                    f"SELECT user_id, platform, token, registered_ms FROM devices WHERE user_id IN ({marks}) "
                    "ORDER BY user_id, registered_ms, token", chunk,
                )
                for row in rows:
                    devices.setdefault(str(row[0]), []).append(_device(row))
            return {u: UserRow(documents.get(u), devices.get(u, [])) for u in wanted}

        return await self._run(read)
