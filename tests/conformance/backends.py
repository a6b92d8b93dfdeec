"""The backends the conformance suites run against, and what a check is given.

Each suite (tests/conformance/suites/<port>.py) is a module of `async def check_*(h)`
functions written against the Protocol of one port (reactor/ports.py) only; `h` is a
`Harness`: `h.open()` opens the port (again: a second handle on the same data, as after
a restart), `h.sleep(n)` lets n ticks of the clock pass. tests/conformance/test_<port>.py
runs every check against every backend in BACKENDS that serves the port.

Adding a backend is a few lines: a `Backend` with, for each port it serves, a function
making the port's `Factory` from what its `start` yields (how to reach the server), e.g.

    Backend(
        "redis",
        ports={"state": lambda server: Factory(lambda place: redis_state(server.url, prefix=place.name), clock="real")},
        start=server_or_unavailable(redis_server),   # tests/servers.py starts redis-server on a free port
    )

`start` runs once per test session (a server for all the checks); a check's `Place` is
fresh (its own directory and its own name: a server-backed factory keeps each check's
keys, topics or tables apart with `place.name`). A server that cannot be started raises
`BackendUnavailable`: the backend's checks then fail, or are skipped with the reason when
HERALD_CONFORMANCE_MAY_SKIP names the backend (or is `all`): a machine without Kafka may
skip Kafka's suite, but only when told so. HERALD_CONFORMANCE_BACKENDS (names, comma
separated) runs only those backends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import pytest
import trio
from trio.testing import MockClock

from reactor.backends import PORTS, BackendUnavailable
from tests.servers import postgres_server
from reactor.backends.embedded import (
    EmbeddedBus, MemoryBroker, MemoryState, SigningKeyFile, SqliteKeyStore, SqliteLogStore, SqliteState, SqliteStore, SqliteTemplateStore,
    SqliteUserStore, opened,
)
from tests.servers import cassandra_server, kafka_server, redis_server

P = TypeVar("P")

MAY_SKIP = "HERALD_CONFORMANCE_MAY_SKIP"
ONLY = "HERALD_CONFORMANCE_BACKENDS"
BUS_TOPICS = {"t": 4, "u": 1}  # the topics every bus check's place declares (partition counts)


@dataclass(frozen=True)
class Place:
    """Where one check's data lives: a fresh directory and a name of its own."""

    directory: Path
    name: str  # unique per check: a prefix for keys, topics, groups or a schema on a shared server
    topics: Mapping[str, int] = field(default_factory=dict)  # the bus's topics and their partition counts


@dataclass(frozen=True)
class Factory(Generic[P]):
    """How a backend opens one port on a place; opening it again on the same place sees the same data."""

    open: Callable[[Place], AbstractAsyncContextManager[P]]
    # "virtual": the backend reads Trio's clock, so checks run under MockClock and a check's hour takes no time;
    # "real": the backend has a clock of its own (a server's): the clock runs at real speed and a tick is short.
    clock: Literal["virtual", "real"] = "virtual"
    tick_s: float = 1.0  # seconds one tick of a check lasts (TTLs, waits); ~0.05 on a real clock
    autojump_s: float = 0.0  # virtual clock: how long every task must be blocked before it jumps (> 0 if it works in threads)


def set_clock(clock: MockClock, factory: Factory[Any]) -> None:
    """Make the test's MockClock what the backend needs: virtual time, or real speed."""
    if factory.clock == "virtual":
        clock.autojump_threshold = factory.autojump_s
    else:
        clock.rate = 1.0


@dataclass
class Harness(Generic[P]):
    """What a check gets: how to open the port under test, and its clock."""

    backend: str
    factory: Factory[P]
    place: Place

    def open(self) -> AbstractAsyncContextManager[P]:
        """Open the port (a second open on the same harness sees the same data, as after a restart)."""
        return self.factory.open(self.place)

    def ticks(self, n: float) -> float:
        """n ticks in seconds."""
        return n * self.factory.tick_s

    async def sleep(self, ticks: float) -> None:
        """Let `ticks` ticks of the clock pass (no wall time at all on a virtual clock)."""
        await trio.sleep(self.ticks(ticks))

    def name(self, *parts: str) -> str:
        """A name (a key, a group) unique to this check."""
        return ".".join((self.place.name, *parts))


@asynccontextmanager
async def crashing(opening: AbstractAsyncContextManager[P]) -> AsyncIterator[P]:
    """Open a port; when the block ends, the handle is cancelled, not closed: a crash of its process."""
    with trio.CancelScope() as scope:
        async with opening as port:
            yield port
            scope.cancel()
            await trio.lowlevel.checkpoint()


# -- the embedded backends ----------------------------------------------------------------


def sqlite(kind: Callable[[Path], Any], filename: str, **clock: Any) -> Factory[Any]:
    """A Factory of an embedded SQLite-backed port (anything with open() and close()).

    On a real clock unless told otherwise: the stores take their times as arguments, and a
    virtual clock would jump past any deadline while a call waits for its worker thread.
    """

    def open_(place: Place) -> AbstractAsyncContextManager[Any]:
        return opened(kind(place.directory / filename))

    return Factory(open_, **{"clock": "real", **clock})


def embedded_bus(kind: Callable[..., EmbeddedBus] = EmbeddedBus) -> Factory[Any]:
    """The embedded bus, run in a nursery of its own: leaving the block stops it; a cancelled block crashes it."""

    @asynccontextmanager
    async def open_(place: Place) -> AsyncIterator[EmbeddedBus]:
        bus = kind(place.directory / "bus", dict(place.topics))
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            try:
                yield bus
            finally:
                bus.stop()

    # Real time: the bus's writes are threads, and the bus checks only wait to see that nothing comes.
    return Factory(open_, clock="real")


@asynccontextmanager
async def _memory_state(place: Place) -> AsyncIterator[MemoryState]:
    yield MemoryState()


@asynccontextmanager
async def _memory_broker(place: Place) -> AsyncIterator[MemoryBroker]:
    from tests.conformance.suites.broker import BUFFER

    yield MemoryBroker(buffer=BUFFER)


@asynccontextmanager
async def _signing_key_file(place: Place) -> AsyncIterator[SigningKeyFile]:
    yield SigningKeyFile(place.directory / "signing-keys.json")


@contextmanager
def no_server(directory: Path) -> Iterator[None]:
    yield None


@dataclass(frozen=True)
class Backend:
    """A backend under test: the ports it serves (each a Factory made from what `start` yields)."""

    name: str
    ports: Mapping[str, Callable[[Any], Factory[Any]]]
    start: Callable[[Path], AbstractContextManager[Any]] = no_server  # once per session; may raise BackendUnavailable


BACKENDS: list[Backend] = [
    Backend(
        "embedded",
        {
            "bus": lambda _: embedded_bus(),
            # The State's keys are in SQLite (threads): the virtual clock jumps only once everything waited 30 ms.
            "state": lambda _: sqlite(SqliteState, "state.sqlite3", clock="virtual", autojump_s=0.03),
            "store": lambda _: sqlite(SqliteStore, "store.sqlite3"),
            "keys": lambda _: sqlite(SqliteKeyStore, "keys.sqlite3"),
            "templates": lambda _: sqlite(SqliteTemplateStore, "templates.sqlite3"),
            "users": lambda _: sqlite(SqliteUserStore, "users.sqlite3"),
            "signing_keys": lambda _: Factory(_signing_key_file, clock="real"),
            "logstore": lambda _: sqlite(SqliteLogStore, "logs.sqlite3"),
            "broker": lambda _: Factory(_memory_broker),
        },
    ),
    # The process-local State (reactor.backends.local_state: caches, throwaway counters) keeps the same promises.
    Backend("memory", {"state": lambda _: Factory(_memory_state)}),
]


@asynccontextmanager
async def _redis_port(server: Any, place: Place, port: str) -> AsyncIterator[Any]:
    from reactor.backends.redis import RedisBroker, RedisState, opened_client

    async with opened_client(f"{server.url}?prefix={place.name}:") as client:
        yield RedisState(client) if port == "state" else RedisBroker(client)


def redis_factory(port: str) -> Callable[[Any], Factory[Any]]:
    """The Redis State or Broker on the session's redis-server, each check's keys under its place's name."""
    # Redis's clock: real time; a tick of 50 ms keeps TTLs and refills well above a round trip (~0.4 ms).
    return lambda server: Factory(lambda place: _redis_port(server, place, port), clock="real", tick_s=0.05)


def server_or_unavailable(start: Callable[[Path], AbstractContextManager[Any]]) -> Callable[[Path], AbstractContextManager[Any]]:
    """A server starter (tests/servers.py) whose failure to start says BackendUnavailable, with the reason."""

    @contextmanager
    def started(directory: Path) -> Iterator[Any]:
        try:
            opening = start(directory)
            server = opening.__enter__()
        except (OSError, RuntimeError) as exc:
            raise BackendUnavailable(str(exc)) from exc
        try:
            yield server
        finally:
            opening.__exit__(None, None, None)

    return started


def _cassandra_logstore(server: Any) -> Factory[Any]:
    """The Cassandra log store on a keyspace of its own per check (place.name), on the session's one server."""
    from reactor.backends.cassandra import CassandraLogStore, parse_url

    def open_(place: Place) -> AbstractAsyncContextManager[Any]:
        return opened(CassandraLogStore(parse_url(f"{server.url}/{place.name}")))

    return Factory(open_, clock="real")


def kafka_bus(server: Any) -> Factory[Any]:
    """The Kafka bus on the session's broker (tests/servers.py kafka_server); each place's topics and groups
    are its own by the URL's prefix (the place's name)."""
    from reactor.backends import BackendSettings, open_backends

    @asynccontextmanager
    async def open_(place: Place) -> AsyncIterator[Any]:
        settings = BackendSettings({"bus": f"{server.url}?prefix={place.name}."}, place.directory, dict(place.topics))
        async with open_backends(settings, ["bus"]) as backends:
            yield backends.bus

    return Factory(open_, clock="real")


BACKENDS.append(Backend("cassandra", {"logstore": _cassandra_logstore}, start=server_or_unavailable(cassandra_server)))


BACKENDS.append(Backend("redis", {"state": redis_factory("state"), "broker": redis_factory("broker")},
                        start=server_or_unavailable(redis_server)))


BACKENDS.append(Backend("kafka", {"bus": kafka_bus}, start=server_or_unavailable(kafka_server)))


def selected() -> list[Backend]:
    """BACKENDS, or those HERALD_CONFORMANCE_BACKENDS names."""
    only = {name.strip() for name in os.environ.get(ONLY, "").split(",") if name.strip()}
    unknown = only - {b.name for b in BACKENDS}
    if unknown:
        raise ValueError(f"{ONLY} names unknown backends {sorted(unknown)}; known: {[b.name for b in BACKENDS]}")
    return [b for b in BACKENDS if not only or b.name in only]


def serving(port: str) -> list[Backend]:
    """The selected backends that serve `port`."""
    if port not in PORTS:
        raise ValueError(f"unknown port {port!r}; the ports are {PORTS}")
    return [b for b in selected() if port in b.ports]


def may_skip(backend: str) -> bool:
    """Whether an unavailable backend may be skipped (HERALD_CONFORMANCE_MAY_SKIP names it, or is `all`)."""
    names = {name.strip() for name in os.environ.get(MAY_SKIP, "").split(",")}
    return "all" in names or backend in names


class Servers:
    """The servers the backends need, started once per session on first use (or why they could not be)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.stack = ExitStack()
        self.started: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        if name not in self.started:
            backend = next(b for b in BACKENDS if b.name == name)  # any backend (a cluster test's too), selected or not
            try:
                self.started[name] = self.stack.enter_context(backend.start(self.directory / name))
            except BackendUnavailable as exc:
                self.started[name] = exc
        found = self.started[name]
        if isinstance(found, BackendUnavailable):
            if may_skip(name):
                pytest.skip(f"backend {name} unavailable: {found}")
            raise found
        return found


def checks_of(suite: Any) -> list[Callable[[Harness[Any]], Any]]:
    """A suite module's checks (its `check_*` functions), in the order they are written."""
    return [f for name, f in vars(suite).items() if name.startswith("check_") and callable(f)]


def check_id(check: Callable[..., Any]) -> str:
    return check.__name__.removeprefix("check_")


# -- PostgreSQL: the store setting's ports, each check on a schema of its own (place.name) ------------


def postgres_port(port: str) -> Callable[[Any], Factory[Any]]:
    """A Factory of one port of the PostgreSQL backend on the suite's server, in the schema `place.name`."""

    def factory(server: Any) -> Factory[Any]:
        @asynccontextmanager
        async def open_(place: Place) -> AsyncIterator[Any]:
            from reactor.backends import BackendSettings, open_backends

            settings = BackendSettings({"store": f"{server.url}?schema={place.name}"}, place.directory, {})
            async with open_backends(settings, [port]) as backends:
                yield getattr(backends, port)

        return Factory(open_, clock="real")

    return factory


BACKENDS.append(Backend(
    "postgres",
    {port: postgres_port(port) for port in ("store", "keys", "templates", "users", "signing_keys")},
    start=server_or_unavailable(lambda _directory: postgres_server()),
))
