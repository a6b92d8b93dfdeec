"""The PostgreSQL backend: the `store` setting's ports (the Store, API keys, templates, users, the
signing key ring) on one schema of a PostgreSQL database, shared by every Herald process given the
same URL.

    store = "postgresql://herald@db.internal:5432/herald?schema=herald&pool_size=4"

    pool.py            the URL's options, a bounded pool of psycopg connections used from worker threads,
                       what a call does when the server is away (PostgresUnavailable, fast; recovery)
    migrations.py      the versioned schema: each store's migrations applied in order under an advisory lock
    store.py           the Store: metadata, scheduler entries with leased claims (FOR UPDATE SKIP LOCKED),
                       the dead-letter queue, the send ledger, topics and fan-out jobs
    key_store.py       the KeyStore: API keys (digests only)
    template_store.py  the TemplateStore: templates and their versions
    user_store.py      the UserStore: preferences and push devices
    signing_keys.py    the SigningKeyStore: the token-signing key ring, compare-and-set on its version

`open_backends(settings, ports)` is the entry point (reactor.backends calls it for `postgresql://`
and `postgres://`): one pool for the ports it opens, each store's migrations applied on open.
Who may import this package: reactor.backends, and tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from reactor.backends import Backends, BackendSettings, not_opened

from .key_store import PostgresKeyStore
from .migrations import applied_versions, migrate
from .pool import CommitUncertain, PgSettings, Pool, PostgresUnavailable, parse_url
from .signing_keys import PostgresSigningKeys
from .store import PostgresStore
from .template_store import PostgresTemplateStore
from .user_store import PostgresUserStore

KINDS: dict[str, Any] = {
    "store": PostgresStore, "keys": PostgresKeyStore, "templates": PostgresTemplateStore, "users": PostgresUserStore,
    "signing_keys": PostgresSigningKeys,
}


@asynccontextmanager
async def pooled(settings: PgSettings) -> AsyncIterator[Pool]:
    """A pool on the server and schema of the settings (parse_url); closed when the block ends."""
    pool = Pool(settings)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.watch)  # the watchdog never raises: a group here only wraps the block's own error
            yield pool
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the block's error as it was raised (a BackendUnavailable stays one)
            error = group.exceptions[0]
            raise error from error.__cause__
        raise
    finally:
        with trio.CancelScope(shield=True):
            await pool.close()


@asynccontextmanager
async def open_backends(settings: BackendSettings, ports: frozenset[str]) -> AsyncIterator[Backends]:
    """Open `ports` (of the `store` setting) on the schema its URL names, applying the migrations; close when the block ends."""
    unknown = ports - set(KINDS)
    if unknown:
        raise ValueError(f"the PostgreSQL backend serves {', '.join(KINDS)}, not {', '.join(sorted(unknown))}")
    try:
        parsed = parse_url(settings.urls["store"])
    except ValueError as exc:
        raise PostgresUnavailable(f"the store setting (HERALD_STORE): {exc}") from None
    ready: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(pooled(parsed))
        try:
            for port in KINDS:
                if port in ports:
                    store = KINDS[port](pool)
                    await store.open()
                    ready[port] = store
        except PostgresUnavailable as exc:
            raise PostgresUnavailable(f"{exc} (is it running? the `store` setting, HERALD_STORE, names it)") from exc
        yield Backends(**ready, **not_opened(ports))


__all__ = [
    "CommitUncertain", "PgSettings", "Pool", "PostgresKeyStore", "PostgresSigningKeys", "PostgresStore", "PostgresTemplateStore",
    "PostgresUnavailable", "PostgresUserStore", "applied_versions", "migrate", "open_backends", "pooled", "parse_url",
]
