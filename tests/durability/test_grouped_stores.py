"""Group commit in the embedded stores and the sandbox sinks, and reads that do not queue behind writes.

Counted where the cost is: SQLite's transactions read off its WAL file (tests/durability/wal.py:
one fsync each under synchronous=FULL), the sinks' fsync calls counted at os.fsync. Each
count is one per write before group commit, so these tests fail if every write syncs alone.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

import reactor.backends.embedded.sqlite as sqlite_backing
from actors.clients import sandbox
from actors.clients.sandbox import EmailOutbox, JsonLinesSink
from reactor.files import CAN_SYNC_FILESYSTEM
from actors.recorder import record_events
from protocol.channels import Channel, Priority
from protocol.content import Content, EmailContent, SmsContent
from protocol.ids import make_notification_id
from protocol.lifecycle import Status
from protocol.messages import Delivery, RetryLater, Sent, StatusEvent
from reactor.backends.embedded import SqliteLogStore, SqliteStore
from reactor.group_commit import WriteFailed
from tests.durability.wal import wal_commits

pytestmark = pytest.mark.trio

T0 = 1_704_067_200_000
N = 48  # concurrent callers


def nid(n: int) -> str:
    return make_notification_id(T0 + n, n)


async def all_at_once(n: int, call: Any) -> list[Any]:
    """Run call(i) for i < n concurrently; each one's result (or the exception it raised)."""
    results: list[Any] = [None] * n

    async def one(i: int) -> None:
        try:
            results[i] = await call(i)
        except Exception as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return results


# -- the send ledger (Store)


async def test_concurrent_ledger_writes_share_transactions_and_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)  # linger 0: concurrent callers still share the next commit
    await store.open()
    before = wal_commits(path)
    results = await all_at_once(N, lambda i: store.mark_sent(nid(i), "sms", "delivered", T0))
    assert results == [None] * N
    commits = wal_commits(path) - before
    assert 1 <= commits < N, f"{commits} transactions for {N} ledger writes"
    await store.close()
    again = SqliteStore(path)
    await again.open()
    try:
        assert [await again.sent_status(nid(i), "sms") for i in range(N)] == ["delivered"] * N
    finally:
        await again.close()


async def test_a_failed_commit_fails_every_ledger_write_of_its_batch_and_keeps_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path, linger_s=0.01)
    await store.open()
    real_run_jobs = sqlite_backing.run_jobs

    class CommitFails:
        """The writer connection, whose COMMIT fails as a disk error would."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return self.db.execute(sql, *args)

        @property
        def in_transaction(self) -> bool:
            return self.db.in_transaction

    monkeypatch.setattr(sqlite_backing, "run_jobs", lambda db, jobs: real_run_jobs(CommitFails(db), jobs))  # type: ignore[arg-type]
    results = await all_at_once(8, lambda i: store.mark_sent(nid(i), "sms", "delivered", T0))
    assert all(isinstance(r, WriteFailed) and isinstance(r.__cause__, sqlite3.OperationalError) for r in results), results
    monkeypatch.setattr(sqlite_backing, "run_jobs", real_run_jobs)
    assert [await store.sent_status(nid(i), "sms") for i in range(8)] == [None] * 8  # rolled back, none kept
    await store.mark_sent(nid(100), "sms", "delivered", T0)  # the store goes on
    await store.close()
    again = SqliteStore(path)
    await again.open()
    try:
        assert [await again.sent_status(nid(i), "sms") for i in range(8)] == [None] * 8
        assert await again.sent_status(nid(100), "sms") == "delivered"
    finally:
        await again.close()


async def test_a_write_that_raises_fails_alone_in_its_batch(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3", linger_s=0.01)
    await store.open()
    try:
        def bad(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO send_ledger (notification_id, channel, at_ms, status) VALUES ('x', 'sms', 0, 'delivered')")
            db.execute("INSERT INTO no_such_table VALUES (1)")

        async def call(i: int) -> Any:
            if i == 3:
                return await store._grouped(bad)
            return await store.mark_sent(nid(i), "sms", "delivered", T0)

        results = await all_at_once(8, call)
        assert isinstance(results[3], sqlite3.OperationalError)
        assert [r for i, r in enumerate(results) if i != 3] == [None] * 7
        assert await store.sent_status("x", "sms") is None  # its own part rolled back
        assert [await store.sent_status(nid(i), "sms") for i in range(8) if i != 3] == ["delivered"] * 7
        assert store.durable_writes < 8  # in a batch with others, which were committed
    finally:
        await store.close()


# -- the log store (the Recorder's apply)


def event(i: int) -> StatusEvent:
    return StatusEvent(nid(i), f"u{i}", Channel.SMS, Status.DELIVERED, T0 + 5, created_ms=T0, priority=Priority.HIGH)


async def test_concurrent_plans_share_transactions_and_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "logs.sqlite3"
    store = SqliteLogStore(path)
    await store.open()
    before = wal_commits(path)
    results = await all_at_once(N, lambda i: record_events(store, [event(i)]))
    assert results == [None] * N
    commits = wal_commits(path) - before
    assert 1 <= commits < N, f"{commits} transactions for {N} plans"
    await store.close()
    again = SqliteLogStore(path)
    await again.open()
    try:
        for i in range(N):
            assert [(r.channel, r.status) for r in await again.statuses(nid(i))] == [("sms", "delivered")]
    finally:
        await again.close()


# -- reads beside writes


async def test_log_reads_do_not_wait_for_the_shared_thread_limiter(tmp_path: Path) -> None:
    store = SqliteLogStore(tmp_path / "logs.sqlite3")
    await store.open()
    try:
        await record_events(store, [event(1)])
        limiter = trio.to_thread.current_default_thread_limiter()
        holders = [object() for _ in range(int(limiter.total_tokens))]
        for holder in holders:  # the node's other I/O holds every thread of the default limiter
            await limiter.acquire_on_behalf_of(holder)
        try:
            with trio.fail_after(10):  # waits forever if reads queue on the default limiter
                assert len(await store.statuses(nid(1))) == 1
                assert len((await store.history("u1"))[0]) == 1
        finally:
            for holder in holders:
                limiter.release_on_behalf_of(holder)
    finally:
        await store.close()


async def test_ledger_reads_do_not_wait_behind_an_open_write_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        await store.mark_sent(nid(1), "sms", "delivered", T0)
        release = threading.Event()

        def slow_write(db: sqlite3.Connection) -> None:  # a write transaction held open (a slow fsync)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO send_ledger VALUES ('held', 'sms', 0, 'delivered')")
            release.wait(30)
            db.execute("COMMIT")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._run, slow_write)
            await trio.sleep(0.05)
            try:
                with trio.fail_after(10):  # waits until the write ends if reads share the writer
                    assert await store.sent_status(nid(1), "sms") == "delivered"
                    assert await store.sent_status("held", "sms") is None  # the last committed state
            finally:
                release.set()
        assert await store.sent_status("held", "sms") == "delivered"
    finally:
        await store.close()


# -- the sandbox sinks


def sms(i: int) -> Delivery:
    return Delivery(nid(i), "u1", Channel.SMS, T0, Content(sms=SmsContent(f"code {i}")), address="+15555550100")


def mail(i: int) -> Delivery:
    return Delivery(nid(i), "u1", Channel.EMAIL, T0, Content(email=EmailContent(f"Hi {i}", text="hello")), address="a@example.org")


class Fsyncs:
    """os.fsync, counted (files and folders apart), and the outbox's filesystem syncs with the staged files each
    covers; optionally failing."""

    def __init__(self) -> None:
        self.files = 0
        self.folders = 0
        self.covered: list[int] = []  # per filesystem sync: the staged (.tmp) files waiting in the folder
        self.fail: OSError | None = None
        self._real = os.fsync
        self._real_filesystem = sandbox.sync_filesystem

    def filesystem(self, folder: Path) -> None:
        if self.fail is not None:
            raise self.fail
        self.covered.append(len(list(folder.glob("*.tmp"))))
        self._real_filesystem(folder)

    def __call__(self, fd: int) -> None:
        if self.fail is not None:
            raise self.fail
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.folders += 1
        else:
            self.files += 1
        self._real(fd)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    counter = Fsyncs()
    monkeypatch.setattr(os, "fsync", counter)
    monkeypatch.setattr(sandbox, "sync_filesystem", counter.filesystem)
    return counter


async def test_concurrent_sms_sends_share_fsyncs(tmp_path: Path, fsyncs: Fsyncs) -> None:
    sink = JsonLinesSink(tmp_path / "sms.jsonl", "sms", linger_s=0.002)
    results = await all_at_once(N, lambda i: sink.send(sms(i)))
    assert all(isinstance(r, Sent) for r in results), results
    assert 1 <= fsyncs.files < N, f"{fsyncs.files} fsyncs for {N} messages"
    lines = [msgspec.json.decode(line) for line in (tmp_path / "sms.jsonl").read_bytes().splitlines()]
    assert sorted(line["notification_id"] for line in lines) == sorted(nid(i) for i in range(N))


async def test_a_failed_sms_batch_retries_every_send_in_it_and_writes_none(tmp_path: Path, fsyncs: Fsyncs) -> None:
    sink = JsonLinesSink(tmp_path / "sms.jsonl", "sms", linger_s=0.002)
    fsyncs.fail = OSError(28, "No space left on device")
    results = await all_at_once(8, lambda i: sink.send(sms(i)))
    assert all(isinstance(r, RetryLater) and "No space left" in r.error for r in results), results
    assert (tmp_path / "sms.jsonl").read_bytes() == b""  # cut back: nothing of the batch stays
    fsyncs.fail = None
    results = await all_at_once(8, lambda i: sink.send(sms(i)))  # retried: written once each
    assert all(isinstance(r, Sent) for r in results)
    assert len((tmp_path / "sms.jsonl").read_bytes().splitlines()) == 8


async def test_concurrent_emails_sync_their_folder_once_per_batch(tmp_path: Path, fsyncs: Fsyncs) -> None:
    outbox = EmailOutbox(tmp_path / "outbox", "Herald <h@example.org>", linger_s=0.002)
    results = await all_at_once(N, lambda i: outbox.send(mail(i)))
    assert all(isinstance(r, Sent) for r in results), results
    # each message synced before it is renamed into place: by an fsync of its own or a sync of the filesystem
    assert fsyncs.files + sum(fsyncs.covered) == N, (fsyncs.files, fsyncs.covered)
    if CAN_SYNC_FILESYSTEM:  # Linux: the batches of several files share one sync
        assert fsyncs.covered and len(fsyncs.covered) + fsyncs.files < N, (fsyncs.files, fsyncs.covered)
    assert 1 <= fsyncs.folders < N, f"{fsyncs.folders} folder syncs for {N} messages"
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == sorted(f"{nid(i)}.eml" for i in range(N))


async def test_a_failed_email_batch_retries_every_send_in_it_and_leaves_no_file(tmp_path: Path, fsyncs: Fsyncs) -> None:
    outbox = EmailOutbox(tmp_path / "outbox", "Herald <h@example.org>", linger_s=0.002)
    fsyncs.fail = OSError(5, "Input/output error")
    results = await all_at_once(8, lambda i: outbox.send(mail(i)))
    assert all(isinstance(r, RetryLater) and "Input/output" in r.error for r in results), results
    assert list((tmp_path / "outbox").iterdir()) == []  # no message, no .tmp left behind


async def test_concurrent_first_sends_read_the_sink_once_before_any_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each first send read the file on its own: a read running beside a write that then failed (and was cut back)
    # took that write's lines as sent, so their retries were answered "already there" and never written.
    sink = JsonLinesSink(tmp_path / "sms.jsonl", "sms", linger_s=0.002)
    loads: list[int] = []
    real = sink._load_seen

    def load() -> set[tuple[str, str]]:
        loads.append(len((tmp_path / "sms.jsonl").read_bytes()) if (tmp_path / "sms.jsonl").exists() else 0)
        return real()

    monkeypatch.setattr(sink, "_load_seen", load)
    results = await all_at_once(8, lambda i: sink.send(sms(i)))
    assert all(isinstance(r, Sent) for r in results), results
    assert loads == [0]  # one read, of the file as it was before any of them wrote
    assert len((tmp_path / "sms.jsonl").read_bytes().splitlines()) == 8
