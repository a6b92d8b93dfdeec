"""The PostgreSQL TemplateStore: templates (the active and the latest version) and their immutable versions,
as embedded/template_store.py. A new version takes its number by incrementing `latest_version` under the
template's row lock, so concurrent saves get distinct numbers."""

from __future__ import annotations

from reactor.ports import TemplateVersion

from .migrations import Migration, migrate
from .pool import Connection, Pool

COMPONENT = "templates"

MIGRATIONS = (
    Migration(1, "templates and their versions", (
        """CREATE TABLE templates (
            id TEXT COLLATE "C" PRIMARY KEY,
            active_version INTEGER NOT NULL,
            latest_version INTEGER NOT NULL,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL
        )""",
        """CREATE TABLE template_versions (
            id TEXT COLLATE "C" NOT NULL REFERENCES templates (id),
            version INTEGER NOT NULL,
            created_ms BIGINT NOT NULL,
            spec BYTEA NOT NULL,
            PRIMARY KEY (id, version)
        )""",
    )),
)


def _create(conn: Connection, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
    inserted = conn.execute(
        "INSERT INTO templates (id, active_version, latest_version, created_ms, updated_ms) VALUES (%s, 1, 1, %s, %s) ON CONFLICT DO NOTHING",
        (template_id, at_ms, at_ms),
    ).rowcount
    if not inserted:
        return None
    conn.execute("INSERT INTO template_versions (id, version, created_ms, spec) VALUES (%s, 1, %s, %s)", (template_id, at_ms, spec))
    return TemplateVersion(template_id, 1, at_ms, spec)


def _add(conn: Connection, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
    row = conn.execute(
        "UPDATE templates SET latest_version = latest_version + 1, active_version = latest_version + 1, updated_ms = %s"
        " WHERE id = %s RETURNING latest_version", (at_ms, template_id),
    ).fetchone()
    if row is None:
        return None
    version = int(row[0])
    conn.execute("INSERT INTO template_versions (id, version, created_ms, spec) VALUES (%s, %s, %s, %s)", (template_id, version, at_ms, spec))
    return TemplateVersion(template_id, version, at_ms, spec)


class PostgresTemplateStore:
    """The TemplateStore port on a schema of a PostgreSQL database."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def open(self) -> None:
        await migrate(self._pool, COMPONENT, MIGRATIONS)

    async def close(self) -> None:
        """Nothing of its own: the pool is closed by whoever opened it."""

    async def create_template(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        return await self._pool.run(lambda c: _create(c, template_id, spec, at_ms))

    async def add_version(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        return await self._pool.run(lambda c: _add(c, template_id, spec, at_ms))

    async def activate(self, template_id: str, version: int, at_ms: int) -> bool:
        return await self._pool.run(lambda c: c.execute(
            "UPDATE templates SET active_version = %s, updated_ms = %s WHERE id = %s"
            " AND EXISTS (SELECT 1 FROM template_versions WHERE id = %s AND version = %s)",
            (version, at_ms, template_id, template_id, version),
        ).rowcount == 1)

    async def active_version(self, template_id: str) -> int | None:
        row = await self._pool.autocommit(lambda c: c.execute("SELECT active_version FROM templates WHERE id = %s", (template_id,)).fetchone())
        return None if row is None else int(row[0])

    async def get_version(self, template_id: str, version: int) -> TemplateVersion | None:
        row = await self._pool.autocommit(lambda c: c.execute(
            "SELECT created_ms, spec FROM template_versions WHERE id = %s AND version = %s", (template_id, version)
        ).fetchone())
        return None if row is None else TemplateVersion(template_id, version, int(row[0]), bytes(row[1]))

    async def versions(self, template_id: str) -> list[tuple[int, int]]:
        rows = await self._pool.autocommit(lambda c: c.execute(
            "SELECT version, created_ms FROM template_versions WHERE id = %s ORDER BY version DESC", (template_id,)
        ).fetchall())
        return [(int(v), int(ms)) for v, ms in rows]
