"""The migration of a web_inbox made before read state existed, in SqliteLogStore.

The inbox's semantics (pages, cursors, unread counts, read, read-all, archive) are checked
on every backend by the LogStore's conformance suite, tests/conformance/suites/logstore.py.
"""

from __future__ import annotations

import sqlite3

import msgspec

from protocol.ids import make_notification_id
from protocol.messages import InboxEntry
from reactor.backends.embedded import SqliteLogStore
from tests.logstore_writes import WritingLogStore

T0 = 1_704_067_200_000
IDS = [make_notification_id(T0 + i, i) for i in range(10)]


def entry(i: int, user: str = "u1", seq: int | None = None) -> InboxEntry:
    return InboxEntry(notification_id=IDS[i], user_id=user, created_ms=T0 + i, title=f"n{i}", seq=10 + i if seq is None else seq)


async def test_an_inbox_made_before_read_state_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE web_inbox (
            user_id TEXT NOT NULL, notification_id TEXT NOT NULL, created_ms INTEGER NOT NULL,
            seq INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (user_id, notification_id)
        ) WITHOUT ROWID;
        CREATE INDEX web_inbox_by_seq ON web_inbox (user_id, seq);
        """
    )
    old.execute("INSERT INTO web_inbox VALUES (?, ?, ?, ?, ?)", ("u1", IDS[0], T0, 10, msgspec.json.encode(entry(0))))
    old.commit()
    old.close()
    store = WritingLogStore(SqliteLogStore(path))
    await store.open()
    try:
        assert [e.notification_id for e in await store.inbox_after("u1", None)] == [IDS[0]]
        rows, _ = await store.inbox_page("u1")
        assert [(r.entry, r.read_ms, r.archived_ms) for r in rows] == [(entry(0), None, None)]
        assert await store.inbox_unread_count("u1") == 1
        assert await store.inbox_mark_read("u1", [IDS[0]], T0) == [IDS[0]]
    finally:
        await store.close()
    store = WritingLogStore(SqliteLogStore(path))  # opening a migrated file again keeps what it holds
    await store.open()
    try:
        row = await store.inbox_get("u1", IDS[0])
        assert row is not None and row.read_ms == T0
        assert await store.inbox_unread_count("u1") == 0
    finally:
        await store.close()
