"""cassandra-driver on Trio: connect in a worker thread, queries resolved on the Trio loop.

The driver runs its own I/O thread (the libev reactor: asyncore is gone from Python 3.12).
`connect()` blocks (it froze Trio for 2 s against a silent server), so it runs through
`trio.to_thread`; so does `prepare()`, once per statement. A query never blocks the Trio
thread: `execute_async` returns a future whose callbacks, called on the driver's thread,
hand the outcome to the Trio loop with `TrioToken.run_sync_soon`; the task waits on a
`trio.Event`. A cancelled wait abandons the query (its outcome is dropped; writes are
idempotent, so an abandoned one that lands anyway changes nothing a retry would not).

Errors: a cluster that cannot be reached, a node that does not answer in time, or too few
replicas alive (NoHostAvailable, OperationTimedOut, Unavailable, Read/WriteTimeout, a
connection lost mid-query) raise CassandraUnavailable (a BackendUnavailable and a PortUnavailable: the front end's 503,
the Recorder's wait and write again) with the reason; the driver reconnects
in the background (every 0.5 s, backing off to 5 s), so calls succeed again once the nodes
are back, without a restart. Anything else (a CQL mistake) raises the driver's own exception.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import trio

from reactor.backends import BackendUnavailable
from reactor.ports import PortUnavailable

from .url import CassandraUrl


class CassandraUnavailable(BackendUnavailable, PortUnavailable):
    """No Cassandra node answered (down, silent, the connection lost): the call failed; it works again once one does."""

# The driver's exceptions that say "not reachable now": retrying later may succeed.
_UNREACHABLE_NAMES = (
    "NoHostAvailable", "OperationTimedOut", "Unavailable", "ReadTimeout", "WriteTimeout", "ConnectionException",
    "ConnectionShutdown", "CoordinationFailure",
)


def _unreachable_types() -> tuple[type[BaseException], ...]:
    import cassandra
    import cassandra.cluster
    import cassandra.connection

    found: list[type[BaseException]] = []
    for module in (cassandra, cassandra.cluster, cassandra.connection):
        found += [getattr(module, name) for name in _UNREACHABLE_NAMES if isinstance(getattr(module, name, None), type)]
    return tuple(found)


class Cql:
    """A connected session: prepared statements, each query at a stated consistency, awaited on Trio."""

    def __init__(self, cluster: Any, session: Any, url: CassandraUrl) -> None:
        from cassandra import ConsistencyLevel

        self._cluster = cluster
        self._session = session
        self.url = url
        self._levels = {name: getattr(ConsistencyLevel, name) for name in ("ONE", "TWO", "THREE", "QUORUM", "ALL",
                        "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE", "SERIAL", "LOCAL_SERIAL")}
        self._prepared: dict[str, Any] = {}
        self._unreachable = _unreachable_types()
        self._lock = trio.Lock()

    async def prepare(self, cql: str, *, consistency: str | None = None, serial: bool = False) -> Any:
        """A prepared statement (prepared once, in a worker thread), at `consistency` (the URL's by default);
        `serial`: a conditional write (its Paxos phase at the URL's serial consistency)."""
        key = f"{consistency}|{serial}|{cql}"
        statement = self._prepared.get(key)
        if statement is None:
            async with self._lock:
                statement = self._prepared.get(key)
                if statement is None:
                    statement = await self._blocking(self._session.prepare, cql)
                    statement.consistency_level = self._levels[consistency or self.url.consistency]
                    if serial:
                        statement.serial_consistency_level = self._levels[self.url.serial_consistency]
                    self._prepared[key] = statement
        return statement

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        except self._unreachable as exc:
            raise CassandraUnavailable(f"{self.url.where()}: {type(exc).__name__}: {exc}") from exc

    async def run(self, statement: Any, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Execute a prepared statement; its rows (all of them: the sessions do not page), on the Trio loop."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        outcome: list[Any] = []

        def settle(value: Any) -> None:
            outcome.append(value)
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:  # the Trio run is over: nobody waits any more
                pass

        try:
            future = self._session.execute_async(statement, params, timeout=self.url.timeout_s)
        except self._unreachable as exc:
            raise CassandraUnavailable(f"{self.url.where()}: {type(exc).__name__}: {exc}") from exc
        future.add_callbacks(settle, settle)
        await done.wait()
        [value] = outcome
        if isinstance(value, BaseException):
            if isinstance(value, self._unreachable):
                raise CassandraUnavailable(f"{self.url.where()}: {type(value).__name__}: {value}") from value
            raise value
        return list(value) if value is not None else []

    async def applied(self, statement: Any, params: Sequence[Any] = ()) -> tuple[bool, tuple[Any, ...]]:
        """Execute a conditional write: whether it applied, and the row's values it returned when it did not."""
        rows = await self.run(statement, params)
        return bool(rows[0][0]), tuple(rows[0][1:])

    async def execute_ddl(self, cql: str) -> None:
        """A schema statement (not prepared), waited for in a worker thread until the schema agrees."""
        await self._blocking(self._session.execute, cql, None, self.url.timeout_s * 6)

    async def use_keyspace(self, keyspace: str) -> None:
        """Make `keyspace` the one unqualified table names are in (before any statement is prepared)."""
        await self._blocking(self._session.set_keyspace, keyspace)

    async def close(self) -> None:
        await trio.to_thread.run_sync(self._cluster.shutdown)


async def connect(url: CassandraUrl) -> Cql:
    """Connect to the cluster (in a worker thread: the driver's connect blocks); BackendUnavailable if no node answers."""
    from cassandra.cluster import Cluster, ExecutionProfile, EXEC_PROFILE_DEFAULT
    from cassandra.io.libevreactor import LibevConnection
    from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
    from cassandra.query import tuple_factory

    logging.getLogger("cassandra").setLevel(logging.ERROR)  # the driver warns on every reconnection attempt
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=url.local_dc)),
        request_timeout=url.timeout_s,
        row_factory=tuple_factory,
    )
    cluster = Cluster(
        contact_points=list(url.hosts),
        connection_class=LibevConnection,
        protocol_version=4,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0),
        connect_timeout=url.timeout_s,
        control_connection_timeout=url.timeout_s,
        idle_heartbeat_interval=5,
        schema_metadata_enabled=False,
        token_metadata_enabled=True,
    )

    def open_session() -> Any:
        session = cluster.connect()
        session.default_fetch_size = None  # every query is bounded by a partition or a LIMIT: no paging
        return session

    try:
        session = await trio.to_thread.run_sync(open_session, abandon_on_cancel=False)
    except Exception as exc:
        await trio.to_thread.run_sync(cluster.shutdown)
        raise CassandraUnavailable(f"{url.where()}: cannot connect: {type(exc).__name__}: {exc}") from exc
    return Cql(cluster, session, url)
