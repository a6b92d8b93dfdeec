"""The PostgreSQL plumbing the stores share: the URL's options, a small bounded pool of psycopg
connections used from worker threads, and what a call does when the server is away.

    postgresql://user[:password]@host[:port]/db?schema=herald&pool_size=4&connect_timeout=3&statement_timeout_ms=10000

`schema` (default `herald`), `pool_size`, `statement_timeout_ms` are Herald's own options and
are taken out of the URL; everything else (sslmode, connect_timeout, application_name, ...) is
passed to libpq as it is. `postgres://` is the same as `postgresql://`.

Each call takes a connection (opening one if none is idle, at most `pool_size` in all), runs a
function of it in a worker thread of the pool's own (trio.to_thread, never on the Trio thread),
in one transaction, and puts the connection back. Bounded waits: connecting gives up after
`connect_timeout` seconds, a statement after `statement_timeout_ms`, a dead peer is noticed by
TCP keepalives and `tcp_user_timeout`, and a server that stopped answering (which enforces no
timeout) has the call's socket shut down by a watchdog after `call_timeout_s`. A failure to reach the server raises PostgresUnavailable
(one line, what failed); the broken connection is dropped, so the next call connects afresh:
calls fail fast while the server is down and succeed again once it is back, without a restart.

A call whose connection broke before its transaction reached COMMIT is retried once on a new
connection (the server rolled it back: nothing was written); one that broke during COMMIT is
not (it may have committed) and raises PostgresUnavailable. Deadlocks and serialization failures
(the server rolled back) are retried a few times.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
import psycopg.sql
import trio

from reactor.backends import BackendUnavailable
from reactor.ports import PortUnavailable

T = TypeVar("T")

DEFAULT_SCHEMA = "herald"
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
OWN_OPTIONS = ("schema", "pool_size", "statement_timeout_ms", "connect_timeout")  # taken out of the URL (libpq's connect_timeout: given to it)
RETRIES_ON_CONFLICT = 5  # deadlocks, serialization failures: the server rolled the transaction back


Connection = psycopg.Connection[tuple[Any, ...]]


class PostgresUnavailable(BackendUnavailable, PortUnavailable):
    """The PostgreSQL server cannot be reached, or did not answer in time; the message says which and where.

    A BackendUnavailable when opening (the node says why in one line and exits), a PortUnavailable
    in a call (it failed fast; the next call may succeed: the front end answers 503)."""


class CommitUncertain(PostgresUnavailable):
    """The connection broke while COMMIT was under way: the transaction may or may not have been applied."""


@dataclass(frozen=True)
class PgSettings:
    """What the `store` URL says: libpq's connection string and Herald's own options."""

    conninfo: str  # the URL without Herald's options, for libpq
    schema: str = DEFAULT_SCHEMA
    pool_size: int = 4
    connect_timeout_s: int = 3
    statement_timeout_ms: int = 10_000

    @property
    def where(self) -> str:
        """The server and schema, without credentials, for messages."""
        parts = urlsplit(self.conninfo)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"{host}{port}{parts.path or '/'} schema {self.schema}"


def parse_url(url: str) -> PgSettings:
    """The settings of a postgresql:// or postgres:// URL; ValueError naming the bad option."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"expected a postgresql:// URL, got {parts.scheme}://")
    libpq: list[tuple[str, str]] = []
    own: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in OWN_OPTIONS:
            own[name] = value
        else:
            libpq.append((name, value))
    schema = own.get("schema", DEFAULT_SCHEMA)
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"the schema option must be a lower-case SQL name ([a-z_][a-z0-9_]*, at most 63), got {schema!r}")
    numbers: dict[str, int] = {}
    for name, low, high, default in (("pool_size", 1, 64, 4), ("statement_timeout_ms", 100, 3_600_000, 10_000),
                                     ("connect_timeout", 1, 300, 3)):
        raw = own.get(name)
        try:
            numbers[name] = default if raw is None else int(raw)
        except ValueError:
            raise ValueError(f"the {name} option must be a whole number, got {raw!r}") from None
        if not low <= numbers[name] <= high:
            raise ValueError(f"the {name} option must be from {low} to {high}, got {numbers[name]}")
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(libpq), parts.fragment))
    return PgSettings(conninfo, schema, numbers["pool_size"], numbers["connect_timeout"], numbers["statement_timeout_ms"])


def _connect(settings: PgSettings) -> Connection:
    """A new connection in autocommit mode (transactions are explicit), its search path on the schema."""
    conn = psycopg.connect(
        settings.conninfo,
        autocommit=True,
        connect_timeout=settings.connect_timeout_s,
        keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
        tcp_user_timeout=settings.statement_timeout_ms + 5_000,
    )
    try:
        conn.execute(
            psycopg.sql.SQL("SET search_path TO {}; SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}").format(
                psycopg.sql.Identifier(settings.schema), psycopg.sql.Literal(settings.statement_timeout_ms),
                psycopg.sql.Literal(settings.statement_timeout_ms * 2),
            )
        )
    except BaseException:
        conn.close()
        raise
    return conn



class _Attempt:
    """One run of a function in a transaction: the connection it ran on, and whether COMMIT was under way when it failed."""

    def __init__(self, conn: Connection | None) -> None:
        self.conn = conn
        self.committing = False
        self.timed_out = False  # the watchdog cut the connection: the server did not answer in time

    def run(self, settings: PgSettings, work: Callable[[Connection], T], transaction: bool) -> T:
        """In the worker thread: connect if need be, then run `work`."""
        if self.conn is None:
            self.conn = _connect(settings)
        conn = self.conn
        if not transaction:
            return work(conn)
        with conn.transaction():
            result = work(conn)
            self.committing = True
        return result


def _is_connection_failure(exc: BaseException, conn: Connection | None) -> bool:
    if isinstance(exc, psycopg.errors.QueryCanceled):  # the statement timeout: the connection is fine
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and (conn is None or conn.broken or conn.closed)


class Pool:
    """At most `pool_size` connections to one schema, each used by one worker thread at a time."""

    def __init__(self, settings: PgSettings) -> None:
        self.settings = settings
        self._idle: list[Connection] = []
        self._slots = trio.Semaphore(settings.pool_size)
        self._threads = trio.CapacityLimiter(settings.pool_size)
        self._open = True
        self._running: dict[_Attempt, float] = {}  # the calls in their threads, and when each is past its time (monotonic)
        self._watch_thread = trio.CapacityLimiter(1)

    async def close(self) -> None:
        """Close every connection, after the calls in progress; further calls fail. Safe to call twice."""
        self._open = False
        for _ in range(self.settings.pool_size):
            await self._slots.acquire()
        try:
            await self._drop_idle()
        finally:
            for _ in range(self.settings.pool_size):
                self._slots.release()

    async def run(self, work: Callable[[Connection], T], *, transaction: bool = True) -> T:
        """`work(conn)` in a worker thread, in one transaction (or none: autocommit), on a pooled connection."""
        async with self._slots:
            conflicts = 0
            may_retry = True
            while True:
                if not self._open:
                    raise RuntimeError(f"the PostgreSQL pool of {self.settings.where} is closed")
                reused = bool(self._idle)
                attempt = _Attempt(self._idle.pop() if reused else None)
                try:
                    result = await self._in_thread(attempt, work, transaction)
                except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                    self._give_back(attempt.conn)  # the server rolled back; the connection is fine
                    conflicts += 1
                    if conflicts > RETRIES_ON_CONFLICT:
                        raise
                    continue
                except psycopg.Error as exc:
                    if attempt.timed_out:
                        await self._close(attempt.conn)
                        raise PostgresUnavailable(f"PostgreSQL at {self.settings.where} did not answer within {self.call_timeout_s:g} s "
                                                  "(a server that stopped answering); the call may or may not have applied") from exc
                    if not _is_connection_failure(exc, attempt.conn):
                        self._give_back(attempt.conn)
                        if isinstance(exc, psycopg.errors.QueryCanceled):
                            raise PostgresUnavailable(f"PostgreSQL at {self.settings.where} did not answer within "
                                                      f"{self.settings.statement_timeout_ms} ms (statement_timeout_ms)") from exc
                        raise
                    await self._close(attempt.conn)
                    if reused:  # the server went away (a restart): the other idle connections are as dead
                        await self._drop_idle()
                    if attempt.committing:
                        raise CommitUncertain(f"PostgreSQL at {self.settings.where}: the connection broke during COMMIT, "
                                              f"which may or may not have applied ({_first_line(exc)})") from exc
                    if reused and may_retry:  # rolled back by the server: run it once more on a new connection
                        may_retry = False
                        continue
                    raise PostgresUnavailable(f"PostgreSQL at {self.settings.where} is unavailable: {_first_line(exc)}") from exc
                except BaseException:
                    self._give_back(attempt.conn)  # work raised (rolled back): the connection is fine
                    raise
                if attempt.timed_out:  # it answered as the watchdog cut the connection: the result stands, the connection goes
                    await self._close(attempt.conn)
                else:
                    self._give_back(attempt.conn)
                return result

    @property
    def call_timeout_s(self) -> float:
        """How long a call may take on the client's side before its connection is cut: a server that stopped
        answering (a frozen host, a hung process) enforces no statement timeout of its own."""
        return 2 * self.settings.statement_timeout_ms / 1000 + self.settings.connect_timeout_s

    async def _in_thread(self, attempt: _Attempt, work: Callable[[Connection], T], transaction: bool) -> T:
        """Run the attempt in a worker thread, watched (`watch`) while it runs; the thread is always waited for."""
        self._running[attempt] = time.monotonic() + self.call_timeout_s  # the server's time: real, whatever Trio's clock
        try:
            return await trio.to_thread.run_sync(attempt.run, self.settings, work, transaction, limiter=self._threads)
        finally:
            del self._running[attempt]

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The watchdog, for as long as the pool is open (run it beside the pool): a call past `call_timeout_s`
        has its socket shut down, so that the blocked thread's read ends (an error) and the thread returns."""
        task_status.started()
        every = min(1.0, self.call_timeout_s / 4)
        while True:
            # real seconds, slept in a thread of its own: under a virtual clock (MockClock's autojump jumps while
            # the calls wait for their threads) a Trio sleep would let a call's deadline pass in no time at all
            await trio.to_thread.run_sync(time.sleep, every, abandon_on_cancel=True, limiter=self._watch_thread)
            now = time.monotonic()
            for attempt, deadline in list(self._running.items()):
                if deadline <= now and not attempt.timed_out:
                    _cut(attempt)

    async def autocommit(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` with each statement its own transaction (no BEGIN/COMMIT round trips): for reads, and for one
        statement whose repetition changes nothing (an upsert, an insert-if-absent), as it may be retried after a
        connection broke (and the statement may have applied)."""
        return await self.run(work, transaction=False)

    def _give_back(self, conn: Connection | None) -> None:
        if conn is None:
            return
        if conn.closed or conn.broken:
            conn.close()  # broken: its socket is gone, nothing to send
        else:
            self._idle.append(conn)

    async def _close(self, conn: Connection | None) -> None:
        if conn is not None:
            await trio.to_thread.run_sync(conn.close, limiter=self._threads)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._close(conn)


def scalar(conn: Connection, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
    """The first column of the one row a statement returns (a count, a RETURNING id)."""
    row = conn.execute(sql, params).fetchone()
    if row is None:
        raise LookupError(f"no row from {sql[:60]!r}")
    return row[0]


def _cut(attempt: _Attempt) -> None:
    """Shut the attempt's socket down (from the Trio thread: a system call that does not block)."""
    conn = attempt.conn
    if conn is None or conn.closed:
        return  # still connecting: connect_timeout bounds that
    attempt.timed_out = True
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as cut:
            cut.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # already closed


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
