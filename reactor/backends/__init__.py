"""The backends: one package per engine, each opening the ports it serves (reactor/ports.py).

    embedded/   the default: files in the data dir, one process (SQLite, a durable local log)
    redis/      the State and the Broker on a Redis shared by the nodes of a cluster
    postgres/   the store setting's ports on a PostgreSQL schema shared by the nodes of a cluster
    kafka/      the bus on Apache Kafka (through reactor/asyncio_bridge.py)
    cassandra/  the log store on Apache Cassandra
    memory/     not a backend to configure: in-memory ports for `herald simulate` (not durable, no threads)

A setting per port names its backend by URL (actors/config.py): `bus`, `state`, `store`
(the Store and the stores beside it: API keys, templates, users, the signing key ring),
`logstore` and `broker`; the URL's scheme picks the package (SCHEMES). `open_backends(settings)`
opens every port as one async context manager, each package opening the ports it was
given; the composition root's storage stage enters it, reports the `Backends`, and leaves
it last at shutdown, once nothing uses them any more.

Who may import what: the composition root (actors/app.py), the configuration (URL
checks) and the offline CLI use this module's names; nothing outside reactor/backends/
imports a backend package, but tests, which may build embedded backends directly
(`from reactor.backends.embedded import ...`), and actors/simulate/, which builds the memory/ ports. A backend package imports reactor (the
ports, the runtime, files.py) and protocol, never actors. This module imports only the
standard library when loaded (the CLI reports a missing package with its help).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from reactor.ports import Broker, Bus, KeyStore, LogStore, SigningKeyStore, State, Store, TemplateStore, UserStore

# Each setting (a URL) and the ports it serves.
SETTINGS: dict[str, tuple[str, ...]] = {
    "bus": ("bus",),
    "state": ("state",),
    "store": ("store", "keys", "templates", "users", "signing_keys"),
    "logstore": ("logstore",),
    "broker": ("broker",),
}
PORTS = tuple(port for ports in SETTINGS.values() for port in ports)  # the fields of Backends
OPEN_ORDER = ("logstore", "store", "state", "broker", "bus")  # settings opened in this order, closed in the reverse one


@dataclass(frozen=True)
class Scheme:
    """A URL scheme and the backend package that serves it."""

    package: str  # the module whose open_backends opens the ports
    location: bool  # whether the URL names a place after `scheme://` (kafka://host:9092); embedded:// names none
    check: str | None = None  # "module:function" raising ValueError on a URL it cannot open (a module of the standard library only)


SCHEMES: dict[str, Scheme] = {
    "embedded": Scheme("reactor.backends.embedded", location=False),
    "kafka": Scheme("reactor.backends.kafka", location=True),  # the bus: kafka://host:port[,host:port][?options]
    "redis": Scheme("reactor.backends.redis", location=True),  # redis://host:6379/0?prefix=herald: (state, broker)
    "postgresql": Scheme("reactor.backends.postgres", location=True),  # postgresql://user@host:5432/db?schema=herald
    "postgres": Scheme("reactor.backends.postgres", location=True),
    "cassandra": Scheme("reactor.backends.cassandra", location=True, check="reactor.backends.cassandra.url:parse_url"),  # the log store
}


class BackendUnavailable(Exception):
    """A backend cannot be opened; the message is one line saying why and what to change."""


def check_url(url: str) -> str:
    """The URL if a backend package serves it; ValueError naming what is wrong and what is known."""
    known = ", ".join(f"{name}://" for name in SCHEMES)
    name, separator, rest = url.partition("://")
    if not separator or not name:
        raise ValueError(f"expected a backend URL such as embedded://, got {url!r} (the schemes are {known})")
    scheme = SCHEMES.get(name)
    if scheme is None:
        raise ValueError(f"no backend serves {name}:// (in {url!r}); the schemes are {known}")
    if rest and not scheme.location:
        raise ValueError(f"{name}:// takes nothing after it (its files are in the data dir), got {url!r}")
    if not rest and scheme.location:
        raise ValueError(f"{name}:// needs a location, got {url!r}")
    if scheme.check is not None:
        module, _, function = scheme.check.partition(":")
        getattr(importlib.import_module(module), function)(url)
    return url


@dataclass(frozen=True)
class BackendSettings:
    """What the backends are opened with."""

    urls: Mapping[str, str]  # setting (bus, state, store, logstore) -> URL
    data_dir: Path  # where the embedded backends keep their files
    topics: Mapping[str, int]  # the bus's topics and their partition counts
    linger_s: float = 0.0  # group commit of the stores' hot writes: how long a write waits to share its fsync
    priority_topics: frozenset[str] = frozenset()  # the embedded bus appends these apart from the rest (critical lanes)


@dataclass(frozen=True)
class Backends:
    """The opened ports, typed by their Protocols. A port that was not asked for raises when used."""

    bus: Bus
    state: State
    store: Store
    keys: KeyStore
    templates: TemplateStore
    users: UserStore
    logstore: LogStore
    signing_keys: SigningKeyStore
    broker: Broker


class BackendPackage(Protocol):
    """What a backend package offers: one entry point opening the ports it was given."""

    def open_backends(self, settings: BackendSettings, ports: frozenset[str]) -> AbstractAsyncContextManager[Backends]:
        """Open `ports` (the others are NotOpened) and yield them as Backends; close them when the block ends."""


class NotOpened:
    """Stands for a port this process did not open: any use of it says so."""

    def __init__(self, port: str, opened: Collection[str]) -> None:
        self._port = port
        self._opened = ", ".join(sorted(opened)) or "none"

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the {self._port} port was not opened here (opened: {self._opened}); cannot use {name}")


def not_opened(ports: Collection[str]) -> dict[str, Any]:
    """A NotOpened for every port not in `ports`, by field name."""
    return {port: NotOpened(port, ports) for port in PORTS if port not in ports}


def _package(name: str) -> BackendPackage:
    return cast(BackendPackage, importlib.import_module(SCHEMES[name].package))


@asynccontextmanager
async def open_backends(settings: BackendSettings, ports: Collection[str] = PORTS) -> AsyncIterator[Backends]:
    """Open `ports` (all of them by default), each through the package its setting's URL names;
    close them all when the block ends (in the reverse order: the bus first, the log store last)."""
    wanted = frozenset(ports)
    unknown = wanted - set(PORTS)
    if unknown:
        raise ValueError(f"unknown ports {sorted(unknown)}; the ports are {', '.join(PORTS)}")
    by_package: dict[str, set[str]] = {}
    for setting in OPEN_ORDER:
        for port in SETTINGS[setting]:
            if port in wanted:
                by_package.setdefault(check_url(settings.urls[setting]).partition("://")[0], set()).add(port)
    opened: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        for name, served in by_package.items():
            part = await stack.enter_async_context(_package(name).open_backends(settings, frozenset(served)))
            opened.update({port: getattr(part, port) for port in served})
        yield Backends(**opened, **not_opened(wanted))


def in_process(url: str) -> bool:
    """Whether the backend a URL names serves from this process (embedded://: its scheme names no place)."""
    return not SCHEMES[check_url(url).partition("://")[0]].location


def local_state(max_keys: int = 100_000) -> State:
    """A State in this process's memory, bounded: for caches and throwaway counters, whatever the backends."""
    from .embedded.memory_state import MemoryState

    return MemoryState(max_keys=max_keys)


__all__ = [
    "Backends", "BackendSettings", "BackendUnavailable", "PORTS", "SCHEMES", "SETTINGS", "check_url", "in_process", "local_state", "open_backends",
]
