"""The embedded TemplateStore: SQLite (WAL, synchronous=FULL), its own file in the data dir.

Two tables: `templates` (one row per template: the active and the latest version) and
`template_versions` (every saved version, immutable). Saving a version and moving the
active pointer happen in one transaction. One connection behind a trio.Lock; each call
is one trio.to_thread hop. Every write is durable when the call returns.
"""

from __future__ import annotations

import sqlite3
from typing import TypeVar

from reactor.ports import TemplateVersion

from .sqlite import SqliteBacked

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,
    active_version INTEGER NOT NULL,
    latest_version INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS template_versions (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    spec BLOB NOT NULL,
    PRIMARY KEY (id, version)
) WITHOUT ROWID;
"""


class SqliteTemplateStore(SqliteBacked):
    SCHEMA = _SCHEMA

    """The TemplateStore port on one SQLite file."""

    async def create_template(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        """Save version 1 and make it active; None if the template exists."""

        def create(db: sqlite3.Connection) -> TemplateVersion | None:
            inserted = db.execute(
                "INSERT OR IGNORE INTO templates (id, active_version, latest_version, created_ms, updated_ms)"
                " VALUES (?, 1, 1, ?, ?)",
                (template_id, at_ms, at_ms),
            ).rowcount
            if not inserted:
                return None
            db.execute("INSERT INTO template_versions (id, version, created_ms, spec) VALUES (?, 1, ?, ?)", (template_id, at_ms, spec))
            return TemplateVersion(template_id, 1, at_ms, spec)

        return await self._transaction(create)

    async def add_version(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        """Save the next version and make it active; None if there is no such template."""

        def add(db: sqlite3.Connection) -> TemplateVersion | None:
            row = db.execute("SELECT latest_version FROM templates WHERE id = ?", (template_id,)).fetchone()
            if row is None:
                return None
            version = int(row[0]) + 1
            db.execute("INSERT INTO template_versions (id, version, created_ms, spec) VALUES (?, ?, ?, ?)", (template_id, version, at_ms, spec))
            db.execute(
                "UPDATE templates SET active_version = ?, latest_version = ?, updated_ms = ? WHERE id = ?",
                (version, version, at_ms, template_id),
            )
            return TemplateVersion(template_id, version, at_ms, spec)

        return await self._transaction(add)

    async def activate(self, template_id: str, version: int, at_ms: int) -> bool:
        """Make a saved version the active one; False if there is no such version."""

        def activate(db: sqlite3.Connection) -> bool:
            found = db.execute("SELECT 1 FROM template_versions WHERE id = ? AND version = ?", (template_id, version)).fetchone()
            if found is None:
                return False
            db.execute("UPDATE templates SET active_version = ?, updated_ms = ? WHERE id = ?", (version, at_ms, template_id))
            return True

        return await self._transaction(activate)

    async def active_version(self, template_id: str) -> int | None:
        """The active version's number, None for an unknown template."""
        row = await self._run(lambda db: db.execute("SELECT active_version FROM templates WHERE id = ?", (template_id,)).fetchone())
        return None if row is None else int(row[0])

    async def get_version(self, template_id: str, version: int) -> TemplateVersion | None:
        """One saved version, None if there is no such version."""
        row = await self._run(lambda db: db.execute(
            "SELECT created_ms, spec FROM template_versions WHERE id = ? AND version = ?", (template_id, version)
        ).fetchone())
        return None if row is None else TemplateVersion(template_id, version, int(row[0]), bytes(row[1]))

    async def versions(self, template_id: str) -> list[tuple[int, int]]:
        """(version, created_ms) of every version, newest first."""
        rows = await self._run(lambda db: db.execute(
            "SELECT version, created_ms FROM template_versions WHERE id = ? ORDER BY version DESC", (template_id,)
        ).fetchall())
        return [(int(v), int(ms)) for v, ms in rows]
