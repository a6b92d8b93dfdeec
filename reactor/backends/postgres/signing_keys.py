"""The PostgreSQL SigningKeyStore: the token-signing key ring, one row of a table of its own.

The ring is a JSON document (the kids, the secrets in hex, created_ms, the current kid) and a
version; a write is compare-and-set on the version (`UPDATE ... WHERE version = expected`, or
`INSERT ... ON CONFLICT DO NOTHING` for the first ring), so of racing writers each version is
written once. The secrets are in this table only: grant it to Herald's role alone (docs/deploy.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from protocol.keys import SigningKey
from reactor.ports import KeyRing

from .migrations import Migration, migrate
from .pool import Pool

COMPONENT = "signing_keys"

MIGRATIONS = (
    Migration(1, "the signing key ring", (
        "CREATE TABLE signing_keys (id SMALLINT PRIMARY KEY CHECK (id = 1), ring TEXT NOT NULL, version BIGINT NOT NULL)",
    )),
)


def _document(keys: Sequence[SigningKey], current: str) -> str:
    return json.dumps({"current": current, "keys": [{"kid": k.kid, "secret": k.secret.hex(), "created_ms": k.created_ms} for k in keys]})


def _ring(document: str, version: int) -> KeyRing:
    parsed: Any = json.loads(document)
    keys = tuple(SigningKey(str(k["kid"]), bytes.fromhex(k["secret"]), int(k["created_ms"])) for k in parsed["keys"])
    return KeyRing(keys, str(parsed["current"]), version)


class PostgresSigningKeys:
    """The SigningKeyStore port on a schema of a PostgreSQL database."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def open(self) -> None:
        await migrate(self._pool, COMPONENT, MIGRATIONS)

    async def close(self) -> None:
        """Nothing of its own: the pool is closed by whoever opened it."""

    async def read_ring(self) -> KeyRing | None:
        row = await self._pool.autocommit(lambda c: c.execute("SELECT ring, version FROM signing_keys WHERE id = 1").fetchone())
        return None if row is None else _ring(str(row[0]), int(row[1]))

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        document = _document(keys, current)
        if expected_version is None:
            sql = "INSERT INTO signing_keys (id, ring, version) VALUES (1, %s, 1) ON CONFLICT DO NOTHING"
            params: tuple[object, ...] = (document,)
        else:
            sql = "UPDATE signing_keys SET ring = %s, version = version + 1 WHERE id = 1 AND version = %s"
            params = (document, expected_version)
        written = await self._pool.run(lambda c: c.execute(sql, params).rowcount)
        if written != 1:
            return None
        return KeyRing(tuple(keys), current, 1 if expected_version is None else expected_version + 1)
