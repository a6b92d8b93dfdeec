"""The Cassandra backends: the LogStore on Apache Cassandra (cassandra-driver, the libev reactor).

    url.py        the cassandra:// URL (hosts, keyspace, replication, consistency, TTL, timeout)
    session.py    the driver on Trio: connect in a thread, queries resolved on the Trio loop
    schema.py     the tables (the seed's schema: statuses, histories, timelines, daily counts, inbox)
    log_store.py  the LogStore: write plans applied idempotently without transactions

`open_backends(settings, ports)` is the entry point (reactor.backends calls it for
`cassandra://`); it serves the `logstore` setting only:

    logstore = "cassandra://10.0.0.1:9042,10.0.0.2:9042/herald?replication=dc1:3&consistency=local_quorum"

Who may import this package: reactor.backends, and tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from reactor.backends import Backends, BackendSettings, not_opened

from .url import CassandraUrl, parse_url

if TYPE_CHECKING:
    from .log_store import CassandraLogStore

SERVES = frozenset({"logstore"})


def __getattr__(name: str) -> Any:
    """CassandraLogStore, imported when asked for: the configuration checks URLs (url.py) without trio or the driver."""
    if name == "CassandraLogStore":
        from .log_store import CassandraLogStore

        return CassandraLogStore
    raise AttributeError(name)


@asynccontextmanager
async def open_backends(settings: BackendSettings, ports: frozenset[str]) -> AsyncIterator[Backends]:
    """Open the log store on the cluster its URL names (BackendUnavailable if no node answers); close it when the block ends."""
    other = ports - SERVES
    if other:
        raise ValueError(f"cassandra:// serves only {', '.join(sorted(SERVES))}, not {', '.join(sorted(other))}")
    from .log_store import CassandraLogStore

    store = CassandraLogStore(parse_url(settings.urls["logstore"]))
    await store.open()
    try:
        yield Backends(logstore=store, **not_opened(ports))
    finally:
        await store.close()


__all__ = ["CassandraLogStore", "CassandraUrl", "open_backends", "parse_url"]
