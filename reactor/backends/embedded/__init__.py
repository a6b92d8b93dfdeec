"""The embedded backends: every port on local files in the data dir, for one process (the default: zero set-up).

    bus.py             the Bus: Kafka's semantics on local disk, durable across kill -9
    state.py           the State: keys with TTLs in SQLite; buckets and pub/sub in memory (memory_state.py)
    store.py           the Store: metadata, the Scheduler's entries, the dead-letter queue, the send ledger
    key_store.py       the KeyStore: API keys (digests only)
    template_store.py  the TemplateStore: templates and their versions
    user_store.py      the UserStore: preferences and push devices
    signing_keys.py    the SigningKeyStore: the token-signing key ring, a 0600 file of its own
    log_store.py       the LogStore: statuses, timelines, history, daily counters, the web inbox
    broker.py          the Broker: web deliveries routed to the node holding the user's sessions, in memory
    sqlite.py          the SQLite plumbing the stores share
    lock.py            one node per data dir

`open_backends(settings, ports)` is the entry point (reactor.backends calls it for
`embedded://`). Opening any port but the key store and the signing key ring takes the
data dir's lock first, so a second node on the same data dir is refused before it reads
or writes anything; `herald keys --offline` opens only those two, beside a running node
(SQLite's WAL and atomic file replacement make that safe).

Who may import this package: reactor.backends, and tests (by the names below).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol, TypeVar

import trio

from reactor.backends import Backends, BackendSettings, not_opened
from reactor.supervisor import ChildSpec, Supervisor

from .broker import MemoryBroker
from .bus import EmbeddedBus
from .key_store import SqliteKeyStore
from .lock import LOCK_FILE, lock_data_dir
from .log_store import SqliteLogStore
from .memory_state import MemoryState
from .signing_keys import SigningKeyFile
from .state import SqliteState
from .store import SqliteStore
from .template_store import SqliteTemplateStore
from .user_store import SqliteUserStore

# Where each port keeps its files, in the data dir.
FILES = {
    "bus": "bus",
    "state": "state.sqlite3",
    "store": "store.sqlite3",
    "keys": "keys.sqlite3",
    "templates": "templates.sqlite3",
    "users": "users.sqlite3",
    "signing_keys": "signing-keys.json",
    "logstore": "logs.sqlite3",
}
SHARED = frozenset({"keys", "signing_keys"})  # ports another process may open beside a running node


class _Openable(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


OpenableT = TypeVar("OpenableT", bound=_Openable)


@asynccontextmanager
async def opened(resource: OpenableT) -> AsyncIterator[OpenableT]:
    """Open a store; close it however the block ends (shielded: a cancelled shutdown still closes its files)."""
    await resource.open()
    try:
        yield resource
    finally:
        with trio.CancelScope(shield=True):
            await resource.close()


@asynccontextmanager
async def open_backends(settings: BackendSettings, ports: frozenset[str]) -> AsyncIterator[Backends]:
    """Open `ports` on the files of `settings.data_dir`; close them when the block ends.

    The bus runs (its group-commit writers) in a nursery of its own, under a supervisor
    that restarts it in place after a crash (it recovers from its files); it is stopped,
    its queued writes made durable, before the stores close.
    """
    data_dir = settings.data_dir
    ready: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        if ports - SHARED:
            lock = await trio.to_thread.run_sync(lock_data_dir, data_dir)
            stack.callback(os.close, lock)  # closing the file releases the lock
        stores = {
            "logstore": SqliteLogStore, "store": SqliteStore, "keys": SqliteKeyStore, "templates": SqliteTemplateStore,
            "users": SqliteUserStore, "state": SqliteState,
        }
        for port, kind in stores.items():
            if port in ports:
                # the send ledger's callers are many (the Providers' attempts): theirs linger to share an fsync;
                # the log store's one writer (the Recorder) batches and lingers in its mailbox instead
                store = SqliteStore(data_dir / FILES[port], settings.linger_s) if port == "store" else kind(data_dir / FILES[port])
                ready[port] = await stack.enter_async_context(opened(store))
        if "broker" in ports:
            ready["broker"] = MemoryBroker()
        if "signing_keys" in ports:
            ready["signing_keys"] = SigningKeyFile(data_dir / FILES["signing_keys"])
        if "bus" in ports:
            bus = EmbeddedBus(data_dir / FILES["bus"], dict(settings.topics), priority_topics=settings.priority_topics)
            supervisor = Supervisor("bus", [ChildSpec("bus", bus.run, stop=bus.stop)])
            nursery = await stack.enter_async_context(trio.open_nursery())
            await nursery.start(supervisor.run)
            stack.callback(supervisor.stop)  # runs first on the way out: the bus drains, then the nursery ends
            ready["bus"] = bus
        yield Backends(**ready, **not_opened(ports))


__all__ = [
    "FILES", "LOCK_FILE", "SHARED", "EmbeddedBus", "MemoryBroker", "MemoryState", "SigningKeyFile", "SqliteKeyStore", "SqliteLogStore",
    "SqliteState", "SqliteStore", "SqliteTemplateStore", "SqliteUserStore", "open_backends", "opened",
]
