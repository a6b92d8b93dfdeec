"""Deliberately broken TemplateStores: each is the embedded one with one mistake a TemplateStore backend could make."""

from __future__ import annotations

import sqlite3
from typing import Any

import trio

from reactor.backends.embedded import SqliteTemplateStore
from reactor.ports import TemplateVersion
from tests.conformance.backends import Factory, sqlite


def _save(db: sqlite3.Connection, template_id: str, version: int, spec: bytes, at_ms: int) -> TemplateVersion:
    """Write a version (over any of that number) and make it the active and latest one."""
    db.execute("INSERT OR REPLACE INTO template_versions (id, version, created_ms, spec) VALUES (?, ?, ?, ?)",
               (template_id, version, at_ms, spec))
    db.execute("UPDATE templates SET active_version = ?, latest_version = ?, updated_ms = ? WHERE id = ?",
               (version, version, at_ms, template_id))
    return TemplateVersion(template_id, version, at_ms, spec)


class NextVersionAfterTheActiveOne(SqliteTemplateStore):
    """After a rollback to 1, saves "version 2" over the existing version 2."""

    async def add_version(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        def add(db: sqlite3.Connection) -> TemplateVersion | None:
            row = db.execute("SELECT active_version FROM templates WHERE id = ?", (template_id,)).fetchone()
            return None if row is None else _save(db, template_id, int(row[0]) + 1, spec, at_ms)

        return await self._transaction(add)


class RacyAddVersion(SqliteTemplateStore):
    """Reads the latest number, makes a round trip, then writes the next: two saves take one number."""

    async def add_version(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        row = await self._run(lambda db: db.execute("SELECT latest_version FROM templates WHERE id = ?", (template_id,)).fetchone())
        if row is None:
            return None
        await trio.sleep(0)
        return await self._transaction(lambda db: _save(db, template_id, int(row[0]) + 1, spec, at_ms))


class CreateOverwrites(SqliteTemplateStore):
    async def create_template(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        created = await super().create_template(template_id, spec, at_ms)
        if created is None:
            await self._transaction(lambda db: _save(db, template_id, 1, spec, at_ms))
        return created


class ActivatesAVersionThatDoesNotExist(SqliteTemplateStore):
    async def activate(self, template_id: str, version: int, at_ms: int) -> bool:
        cursor = await self._run(lambda db: db.execute(
            "UPDATE templates SET active_version = ?, updated_ms = ? WHERE id = ?", (version, at_ms, template_id)))
        return bool(cursor.rowcount)


class VersionsOldestFirst(SqliteTemplateStore):
    async def versions(self, template_id: str) -> list[tuple[int, int]]:
        return sorted(await super().versions(template_id))


class NewVersionIsNotActivated(SqliteTemplateStore):
    async def add_version(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        active = await self.active_version(template_id)
        saved = await super().add_version(template_id, spec, at_ms)
        if saved is not None and active is not None:
            await super().activate(template_id, active, at_ms)
        return saved


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: sqlite(kind, "templates.sqlite3")
    for kind in (NextVersionAfterTheActiveOne, RacyAddVersion, CreateOverwrites, ActivatesAVersionThatDoesNotExist,
                 VersionsOldestFirst, NewVersionIsNotActivated)
}
