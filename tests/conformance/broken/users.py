"""Deliberately broken UserStores: each is the embedded one with one mistake a UserStore backend could make."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import trio

from reactor.backends.embedded import SqliteUserStore
from reactor.ports import DeviceRow, UserRow
from tests.conformance.backends import Factory, sqlite


class RacyUpdate(SqliteUserStore):
    """Reads the document, makes a round trip, then writes: concurrent updates lose each other's change."""

    async def update_preferences(self, user_id: str, change: Callable[[bytes | None], bytes], at_ms: int) -> bytes:
        document = change(await self.get_preferences(user_id))
        await trio.lowlevel.checkpoint()
        await self.put_preferences(user_id, document, at_ms)
        return document


class MoveIsNotReported(SqliteUserStore):
    async def add_device(self, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
        return [d for d in await super().add_device(device, max_per_user) if d.user_id == device.user_id]


class NoDeviceBound(SqliteUserStore):
    async def add_device(self, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
        return await super().add_device(device, 1_000_000)


class EvictsTheNewest(SqliteUserStore):
    async def add_device(self, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
        displaced = await super().add_device(device, 1_000_000)
        current = await self.devices(device.user_id)
        evicted = [d for d in reversed(current) if d.token != device.token][: max(0, len(current) - max_per_user)]
        await self._run(lambda db: db.executemany("DELETE FROM devices WHERE token = ?", [(d.token,) for d in evicted]))
        return displaced + evicted


class RefreshKeepsTheFirstRegistration(SqliteUserStore):
    async def add_device(self, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
        mine = {d.token: d for d in await self.devices(device.user_id)}
        if device.token in mine:
            return []
        return await super().add_device(device, max_per_user)


class RemovesAnyUsersToken(SqliteUserStore):
    async def remove_device(self, user_id: str, token: str) -> bool:
        cursor = await self._run(lambda db: db.execute("DELETE FROM devices WHERE token = ?", (token,)))
        return bool(cursor.rowcount)


class DevicesNewestFirst(SqliteUserStore):
    async def devices(self, user_id: str) -> list[DeviceRow]:
        return list(reversed(await super().devices(user_id)))


class UsersReadTheFirstChunkOnly(SqliteUserStore):
    """Binds the first 500 ids of a batch read and drops the rest (a backend that forgot to page its IN list)."""

    async def users(self, user_ids: Sequence[str]) -> dict[str, UserRow]:
        return await super().users(list(user_ids)[:500])


class UsersForgetTheUnknown(SqliteUserStore):
    """Answers only the users it has a row of: the caller's lookup of a new user fails."""

    async def users(self, user_ids: Sequence[str]) -> dict[str, UserRow]:
        return {u: row for u, row in (await super().users(user_ids)).items() if row.preferences is not None or row.devices}


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: sqlite(kind, "users.sqlite3")
    for kind in (RacyUpdate, MoveIsNotReported, NoDeviceBound, EvictsTheNewest, RefreshKeepsTheFirstRegistration,
                 RemovesAnyUsersToken, DevicesNewestFirst, UsersReadTheFirstChunkOnly, UsersForgetTheUnknown)
}

CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "UsersReadTheFirstChunkOnly": ("users_read_many_as_each_alone",),
    "UsersForgetTheUnknown": ("users_read_many_as_each_alone",),
}
