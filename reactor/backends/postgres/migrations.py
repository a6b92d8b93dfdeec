"""Versioned schema: each store module lists its migrations; `migrate` applies the missing ones, in order.

The table `herald_migrations (component, version, applied_at)` in the schema records what was
applied. Each migration runs in a transaction of its own that first takes a transaction-level
advisory lock of the schema, then creates the schema and the table if need be and skips the
migration if another process applied it meanwhile: two processes starting at once apply each
migration once, one after the other. A migration is a list of statements, never edited once
released; a change of the schema is a new migration with the next version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import psycopg.sql

from .pool import Connection, Pool

LOCK_CLASS = 0x4852  # "HR": the first key of Herald's advisory locks (the second is a hash of the schema's name)


@dataclass(frozen=True)
class Migration:
    version: int  # 1, 2, ... in order, per component
    summary: str
    statements: tuple[str, ...]


def _apply(conn: Connection, schema: str, component: str, migration: Migration) -> bool:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, "migrations:" + schema))
    conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(schema)))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS herald_migrations (component TEXT NOT NULL, version INTEGER NOT NULL,"
        " summary TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
    )
    done = conn.execute("SELECT 1 FROM herald_migrations WHERE component = %s AND version = %s", (component, migration.version)).fetchone()
    if done is not None:
        return False
    for statement in migration.statements:
        conn.execute(statement)  # our own constant SQL
    conn.execute(
        "INSERT INTO herald_migrations (component, version, summary) VALUES (%s, %s, %s)", (component, migration.version, migration.summary)
    )
    return True


async def migrate(pool: Pool, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the component's migrations not yet applied, in order; the versions this call applied."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"the {component} migrations must be numbered 1, 2, ... in order, got {versions}")
    applied: list[int] = []
    for migration in migrations:
        if await pool.run(partial(_apply, schema=pool.settings.schema, component=component, migration=migration)):
            applied.append(migration.version)
    return applied


async def applied_versions(pool: Pool, component: str) -> list[int]:
    """The versions of the component recorded as applied (for inspection and tests)."""
    rows = await pool.run(lambda conn: conn.execute(
        "SELECT version FROM herald_migrations WHERE component = %s ORDER BY version", (component,)).fetchall())
    return [int(r[0]) for r in rows]
