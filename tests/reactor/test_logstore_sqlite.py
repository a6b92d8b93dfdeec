"""What only the embedded log store does: its cursor format, closing, and migrating files from older versions.

The LogStore port's semantics (lifecycle outcomes, idempotent redelivery, timelines,
counters, history and inbox paging, read state) are checked on every backend by its
conformance suite, tests/conformance/suites/logstore.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from protocol.channels import Channel, Priority
from protocol.ids import make_notification_id
from protocol.lifecycle import Status
from protocol.messages import InboxEntry, StatusEvent
from reactor.backends.embedded import SqliteLogStore
from reactor.backends.embedded.log_store import encode_cursor
from reactor.ports import InvalidCursor
from tests.logstore_writes import WritingLogStore

pytestmark = pytest.mark.trio

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def nid(ms: int, n: int = 0) -> str:
    return make_notification_id(ms, n)


def ev(
    notification_id: str,
    status: Status,
    at_ms: int,
    *,
    channel: Channel = Channel.EMAIL,
    user: str = "u1",
    created_ms: int | None = None,
    detail: str = "",
) -> StatusEvent:
    return StatusEvent(
        notification_id, user, channel, status, at_ms, detail=detail,
        created_ms=T0 if created_ms is None else created_ms, priority=Priority.HIGH,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[WritingLogStore]:
    s = WritingLogStore(SqliteLogStore(tmp_path / "log.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_history_rejects_a_malformed_cursor(store: WritingLogStore) -> None:
    await store.record([ev(nid(T0), Status.QUEUED, T0)])
    bad = ["", "!!!", "not base64 at all", "e30", encode_cursor("u1", 1, "x", "y")[:-3] + "@@@",
           "WzEsMl0", "WyJhIiwiYiIsImMiXQ", "W3RydWUsImEiLCJiIl0", "\u00e9\u00e9\u00e9\u00e9",
           encode_cursor("u1", True, "a", "b"), encode_cursor("u1", 2**63, "a", "b")]
    # e30 = {}, WzEsMl0 = [1,2], WyJhIiwiYiIsImMiXQ = ["a","b","c"], W3RydWUsImEiLCJiIl0 = [true,"a","b"]
    for cursor in bad:
        with pytest.raises(InvalidCursor, match="invalid cursor"):
            await store.history("u1", cursor=cursor)
        with pytest.raises(InvalidCursor, match="invalid cursor"):  # an inbox cursor is the backend's too
            await store.inbox_page("u1", cursor=cursor)
    with pytest.raises(InvalidCursor):  # a history cursor is no inbox cursor
        await store.inbox_page("u1", cursor=encode_cursor("u1", T0 + 1, "", ""))
    with pytest.raises(InvalidCursor, match="not one of this user's history pages"):  # nor another user's
        await store.history("u2", cursor=encode_cursor("u1", T0 + 1, "", ""))
    rows, _ = await store.history("u1", cursor=encode_cursor("u1", T0 + 1, "", ""))
    assert len(rows) == 1


async def test_a_closed_store_refuses_calls_closes_twice_and_opens_again(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    n = nid(T0)
    store = WritingLogStore(SqliteLogStore(path))
    await store.open()
    await store.record([ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1)], [InboxEntry(n, "u1", T0, "hi")])
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(RuntimeError):
        await store.statuses(n)
    again = SqliteLogStore(path)
    await again.open()  # schema creation is idempotent
    try:
        assert [r.status for r in await again.statuses(n)] == ["sent"]
    finally:
        await again.close()


async def test_a_timeline_from_before_steps_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    n, m = nid(T0), nid(T0, 1)
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE notification_events (
            notification_id TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL,
            at_ms INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT ''
        );
        CREATE UNIQUE INDEX notification_events_by_id ON notification_events (notification_id, channel, status, detail);
        CREATE TABLE notification_status (
            notification_id TEXT NOT NULL, channel TEXT NOT NULL, user_id TEXT NOT NULL, status TEXT NOT NULL,
            priority TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (notification_id, channel)
        ) WITHOUT ROWID;
        """
    )
    down = "after 1 attempt(s): down"
    rows = [(n, "accepted", 0, ""), (n, "queued", 0, ""), (n, "dead_lettered", 1, down),
            (n, "queued", 2, "replayed from the dead-letter queue (1)"), (n, "queued", 3, "attempt 1 failed"),
            (m, "accepted", 0, ""), (m, "queued", 0, ""), (m, "delivered", 3, "ack"), (m, "sent", 4, "late")]
    old.executemany("INSERT INTO notification_events VALUES (?, 'email', ?, ?, ?)", [(i, s, T0 + t, d) for i, s, t, d in rows])
    old.executemany("INSERT INTO notification_status VALUES (?, 'email', 'u1', ?, 'high', ?, ?, '')",
                    [(n, "queued", T0, T0 + 3), (m, "delivered", T0, T0 + 3)])
    old.commit()
    old.close()
    store = WritingLogStore(SqliteLogStore(path))
    await store.open()
    try:
        assert [(e.status, e.at_ms - T0) for e in await store.events(n)] == [
            ("accepted", 0), ("queued", 0), ("dead_lettered", 1),  # round 0
            ("queued", 2), ("queued", 3),  # round 1 (the replay's detail says where it starts)
        ]
        # an old timeline out of lifecycle order is read in order (the old rows keep their times)
        assert [e.status for e in await store.events(m)] == ["accepted", "queued", "sent", "delivered"]
        # the old unique index is gone: the second dead-lettering, with the first one's detail, is a row of its own
        await store.record([ev(n, Status.DEAD_LETTERED, T0 + 5, detail=down)])
        assert [(e.status, e.detail) for e in await store.events(n)][-2:] == [("queued", "attempt 1 failed"), ("dead_lettered", down)]
        await store.close()
        again = SqliteLogStore(path)
        await again.open()  # the migration ran once: reopening changes nothing
        try:
            assert [e.status for e in await again.events(n)] == ["accepted", "queued", "dead_lettered", "queued", "queued", "dead_lettered"]
        finally:
            await again.close()
    finally:
        await store.close()


async def test_steps_stored_before_scheduled_ranked_are_moved_up_once(tmp_path: Path) -> None:
    """A file written with the ranks of before `scheduled` (user_version 0: queued at 1, sent at 2, ...): opening it
    moves every step but accepted's up by one, once, so the statuses that follow read in order."""
    import sqlite3

    path = tmp_path / "ranks.db"
    n = nid(T0)
    store = WritingLogStore(SqliteLogStore(path))
    await store.open()
    await store.record([ev(n, Status.ACCEPTED, T0), ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1)])
    await store.close()
    old = sqlite3.connect(path)  # as the version before wrote it
    for table in ("notification_events", "notification_status"):
        old.execute(f"UPDATE {table} SET step = step - 1 WHERE status <> 'accepted'")
    old.execute("PRAGMA user_version = 0")
    old.commit()
    old.close()
    for _ in range(2):  # the second opening changes nothing
        store = WritingLogStore(SqliteLogStore(path))
        await store.open()
        try:
            [state] = await store.key_states([(n, "email")], timeline=True)
            assert state.status is Status.SENT and state.timeline is not None
            assert [(r.step, r.status) for r in state.timeline] == [(0, Status.ACCEPTED), (2, Status.QUEUED), (3, Status.SENT)]
            # the next step moves the stored status: its guard (the sent step of now) matches what was migrated
            await store.record([ev(n, Status.DELIVERED, T0 + 2)])
            assert [r.status for r in await store.statuses(n)] == ["delivered"]
        finally:
            await store.close()
        old = sqlite3.connect(path)
        old.execute("UPDATE notification_status SET status = 'sent', step = 3")  # back to sent for the second round
        old.execute("DELETE FROM notification_events WHERE status = 'delivered'")
        old.commit()
        old.close()
