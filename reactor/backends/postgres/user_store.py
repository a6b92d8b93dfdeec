"""The PostgreSQL UserStore: preferences and push devices, as embedded/user_store.py.

update_preferences and add_device take a transaction-level advisory lock of the user first,
so a read-modify-write of one user's document or device list is never interleaved with
another (a user never seen has no row to lock). A token belongs to one user at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reactor.ports import DeviceRow, UserRow

from .migrations import Migration, migrate
from .pool import Connection, Pool

COMPONENT = "users"
USER_LOCK = 0x4855  # "HU": the first key of a user's advisory lock

MIGRATIONS = (
    Migration(1, "preferences and devices", (
        "CREATE TABLE preferences (user_id TEXT COLLATE \"C\" PRIMARY KEY, document BYTEA NOT NULL, updated_ms BIGINT NOT NULL)",
        """CREATE TABLE devices (
            token TEXT COLLATE "C" PRIMARY KEY,
            user_id TEXT COLLATE "C" NOT NULL,
            platform TEXT NOT NULL,
            registered_ms BIGINT NOT NULL
        )""",
        "CREATE INDEX devices_by_user ON devices (user_id, registered_ms, token)",
    )),
)

_DEVICE_COLUMNS = "user_id, platform, token, registered_ms"


def _device(row: Any) -> DeviceRow:
    return DeviceRow(user_id=str(row[0]), platform=str(row[1]), token=str(row[2]), registered_ms=int(row[3]))


def _devices_of(conn: Connection, user_id: str) -> list[DeviceRow]:
    rows = conn.execute(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = %s ORDER BY registered_ms, token", (user_id,)
    ).fetchall()
    return [_device(r) for r in rows]


def _lock_user(conn: Connection, user_id: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (USER_LOCK, user_id))


def _put(conn: Connection, user_id: str, document: bytes, at_ms: int) -> None:
    conn.execute(
        "INSERT INTO preferences (user_id, document, updated_ms) VALUES (%s, %s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET document = EXCLUDED.document, updated_ms = EXCLUDED.updated_ms",
        (user_id, document, at_ms),
    )


def _update(conn: Connection, user_id: str, change: Callable[[bytes | None], bytes], at_ms: int) -> bytes:
    _lock_user(conn, user_id)
    row = conn.execute("SELECT document FROM preferences WHERE user_id = %s", (user_id,)).fetchone()
    document = change(None if row is None else bytes(row[0]))
    _put(conn, user_id, document, at_ms)
    return document


def _add_device(conn: Connection, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
    _lock_user(conn, device.user_id)
    row = conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE token = %s FOR UPDATE", (device.token,)).fetchone()
    moved = [_device(row)] if row is not None and row[0] != device.user_id else []
    conn.execute(
        "INSERT INTO devices (token, user_id, platform, registered_ms) VALUES (%s, %s, %s, %s) ON CONFLICT (token) DO UPDATE SET"
        " user_id = EXCLUDED.user_id, platform = EXCLUDED.platform, registered_ms = EXCLUDED.registered_ms",
        (device.token, device.user_id, device.platform, device.registered_ms),
    )
    current = _devices_of(conn, device.user_id)
    evicted = [d for d in current if d.token != device.token][: max(0, len(current) - max_per_user)]
    if evicted:
        conn.execute("DELETE FROM devices WHERE token = ANY(%s)", ([d.token for d in evicted],))
    return moved + evicted


def _users(conn: Connection, wanted: list[str]) -> dict[str, UserRow]:
    documents = {str(u): bytes(d) for u, d in conn.execute(
        "SELECT user_id, document FROM preferences WHERE user_id = ANY(%s)", (wanted,)).fetchall()}
    devices: dict[str, list[DeviceRow]] = {}
    for row in conn.execute(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ANY(%s) ORDER BY user_id, registered_ms, token", (wanted,)
    ).fetchall():
        devices.setdefault(str(row[0]), []).append(_device(row))
    return {u: UserRow(documents.get(u), devices.get(u, [])) for u in wanted}


class PostgresUserStore:
    """The UserStore port on a schema of a PostgreSQL database."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def open(self) -> None:
        await migrate(self._pool, COMPONENT, MIGRATIONS)

    async def close(self) -> None:
        """Nothing of its own: the pool is closed by whoever opened it."""

    async def get_preferences(self, user_id: str) -> bytes | None:
        row = await self._pool.autocommit(lambda c: c.execute("SELECT document FROM preferences WHERE user_id = %s", (user_id,)).fetchone())
        return None if row is None else bytes(row[0])

    async def put_preferences(self, user_id: str, document: bytes, at_ms: int) -> None:
        await self._pool.autocommit(lambda c: _put(c, user_id, document, at_ms))

    async def update_preferences(self, user_id: str, change: Callable[[bytes | None], bytes], at_ms: int) -> bytes:
        return await self._pool.run(lambda c: _update(c, user_id, change, at_ms))

    async def add_device(self, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
        return await self._pool.run(lambda c: _add_device(c, device, max_per_user))

    async def remove_device(self, user_id: str, token: str) -> bool:
        return await self._pool.run(lambda c: c.execute("DELETE FROM devices WHERE token = %s AND user_id = %s", (token, user_id)).rowcount > 0)

    async def devices(self, user_id: str) -> list[DeviceRow]:
        return await self._pool.autocommit(lambda c: _devices_of(c, user_id))

    async def users(self, user_ids: Sequence[str]) -> dict[str, UserRow]:
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        return await self._pool.autocommit(lambda c: _users(c, wanted))
