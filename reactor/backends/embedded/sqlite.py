"""The plumbing the embedded SQLite backends share: one writer connection, used from a worker
thread one call at a time (a trio.Lock), WAL journal, and the schema created on open; optional
read connections; and group commit of small writes.

Group commit (`_grouped`): concurrent callers' writes, each a function of the connection, run in
one IMMEDIATE transaction (each in a SAVEPOINT of its own, so one that raises is rolled back
alone and only its caller sees its error) with one commit, one fsync; each caller returns once
that commit is durable. `linger_s` bounds how long a batch waits for company (reactor/group_commit.py).

Read connections (`READERS` of them, query-only, WAL): `_read` runs on one while the writer
holds a write transaction open, on its own thread limiter, so a read waits neither behind a
write nor behind trio.to_thread's default limiter (which the other I/O of the node shares).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, TypeVar

import trio

from reactor.group_commit import GroupCommit

T = TypeVar("T")


class Job(Generic[T]):
    """One caller's write in a group-committed transaction, and what came of it."""

    __slots__ = ("work", "result", "error")

    def __init__(self, work: Callable[[sqlite3.Connection], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.error: Exception | None = None


def run_jobs(db: sqlite3.Connection, jobs: list[Job[Any]]) -> None:
    """Run the jobs in one transaction, each in a savepoint (a job that raises is rolled back and keeps its error)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for job in jobs:
            db.execute("SAVEPOINT job")
            try:
                job.result = job.work(db)
            except Exception as exc:
                db.execute("ROLLBACK TO job")
                job.error = exc
            db.execute("RELEASE job")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def connect(path: Path, synchronous: str = "FULL", *, reader: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode (query-only for a reader)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    if reader:
        db.execute("PRAGMA query_only=ON")
    else:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
    return db


class ReadPool:
    """Query-only connections on a WAL file, each used by one worker thread at a time, on a limiter of their own."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._idle: list[sqlite3.Connection] = []
        self._slots = trio.Semaphore(size)
        self._threads = trio.CapacityLimiter(max(1, size))
        self._open = False

    async def open(self) -> None:
        for _ in range(self.size):
            self._idle.append(await trio.to_thread.run_sync(lambda: connect(self.path, reader=True)))
        self._open = True

    async def close(self) -> None:
        """Close every connection, waiting for the reads in progress; safe to call twice."""
        self._open = False
        for _ in range(self.size):
            await self._slots.acquire()
        try:
            for db in self._idle:
                await trio.to_thread.run_sync(db.close)
            self._idle.clear()
        finally:
            for _ in range(self.size):
                self._slots.release()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on an idle connection in a worker thread. A free connection is taken without
        yielding to the event loop (under load each yield is a wait behind every runnable task)."""
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            if not self._open:
                raise RuntimeError(f"the read connections of {self.path.name} are not open")
            db = self._idle.pop()
            try:
                return await trio.to_thread.run_sync(work, db, limiter=self._threads)
            finally:
                self._idle.append(db)
        finally:
            self._slots.release()


class SqliteBacked:
    """Base of a SQLite-backed store: subclasses set SCHEMA (and SYNCHRONOUS if not FULL, READERS for read connections)."""

    SCHEMA: ClassVar[str] = ""
    SYNCHRONOUS: ClassVar[str] = "FULL"  # every commit is durable when the call returns
    READERS: ClassVar[int] = 0  # read connections; 0: `_read` runs on the writer connection

    def __init__(self, path: Path, linger_s: float = 0.0) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()
        self._commits: GroupCommit[Job[Any], None] = GroupCommit(self._write_jobs, linger_s=linger_s)
        self._readers = ReadPool(path, self.READERS) if self.READERS else None

    @property
    def durable_writes(self) -> int:
        """Group-committed transactions made so far (each one commit, one fsync)."""
        return self._commits.batches

    async def open(self) -> None:
        """Open (and create if needed) the database."""

        def _open() -> sqlite3.Connection:
            db = connect(self.path, self.SYNCHRONOUS)
            db.executescript(self.SCHEMA)
            return db

        self._db = await trio.to_thread.run_sync(_open)
        if self._readers is not None:
            await self._readers.open()

    async def close(self) -> None:
        """Close the database; further calls fail."""
        if self._readers is not None:
            await self._readers.close()
        if self._db is not None:
            async with self._lock:
                db, self._db = self._db, None
                await trio.to_thread.run_sync(db.close)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        async with self._lock:
            return await trio.to_thread.run_sync(work, db)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on a read connection (the last committed state), or on the writer if there are none."""
        if self._readers is None or self._db is None:
            return await self._run(work)
        return await self._readers.run(work)

    async def _write_jobs(self, jobs: list[Job[Any]]) -> None:
        await self._run(lambda db: run_jobs(db, jobs))

    async def _grouped(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in a group-committed transaction; its result once that transaction is durable.

        `work` must not begin or end a transaction itself. If it raises, only its own part is
        rolled back and the error is raised here; if the transaction fails, every caller in it
        gets reactor.group_commit.WriteFailed.
        """
        if self._db is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        job: Job[T] = Job(work)
        await self._commits.commit([job])
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]  # set by run_jobs when there is no error

    async def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one IMMEDIATE transaction (rolled back if it raises)."""

        def run(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._run(run)
