"""The inbox's read state in SqliteLogStore: pages, unread counts, read, read-all, archive,
and the migration of a web_inbox made before read state existed."""

from __future__ import annotations

import sqlite3

import msgspec
import pytest

from protocol.ids import make_notification_id
from protocol.messages import InboxEntry
from reactor.backends.embedded import SqliteLogStore
from tests.logstore_writes import WritingLogStore

T0 = 1_704_067_200_000
IDS = [make_notification_id(T0 + i, i) for i in range(10)]


def entry(i: int, user: str = "u1", seq: int | None = None) -> InboxEntry:
    return InboxEntry(notification_id=IDS[i], user_id=user, created_ms=T0 + i, title=f"n{i}", seq=10 + i if seq is None else seq)


@pytest.fixture
async def store(tmp_path):
    s = WritingLogStore(SqliteLogStore(tmp_path / "log.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def page_ids(store: SqliteLogStore, user: str = "u1", **kwargs) -> list[str]:
    """Every id of a listing, following the cursor with pages of 2."""
    ids: list[str] = []
    cursor = None
    while True:
        rows, cursor = await store.inbox_page(user, cursor=cursor, limit=2, **kwargs)
        ids += [r.entry.notification_id for r in rows]
        if cursor is None:
            return ids


async def test_pages_are_newest_first_in_delivery_order(store):
    # delivery order (seq) differs from id order for 3 and 4: the inbox follows delivery
    await store.record([], [entry(0), entry(1), entry(2), entry(3, seq=20), entry(4, seq=19), entry(5, user="u2")])
    assert await page_ids(store) == [IDS[3], IDS[4], IDS[2], IDS[1], IDS[0]]
    assert await page_ids(store, "u2") == [IDS[5]]
    with pytest.raises(ValueError):
        await store.inbox_page("u1", cursor="!!")


async def test_read_archive_and_unread_count(store):
    await store.record([], [entry(i) for i in range(5)])
    assert await store.inbox_unread_count("u1") == 5
    assert await store.inbox_mark_read("u1", [IDS[1], IDS[2], IDS[9]], T0 + 100) == [IDS[1], IDS[2]]  # 9 is not there
    assert await store.inbox_mark_read("u1", [IDS[1]], T0 + 200) == []  # already read: keeps its first read time
    row = await store.inbox_get("u1", IDS[1])
    assert row is not None and row.read_ms == T0 + 100 and row.archived_ms is None
    assert await store.inbox_mark_read("u2", [IDS[3]], T0) == []  # another user's: untouched
    assert await store.inbox_unread_count("u1") == 3
    assert await page_ids(store, unread=True) == [IDS[4], IDS[3], IDS[0]]

    assert await store.inbox_archive("u1", [IDS[0], IDS[1]], T0 + 300) == [IDS[0], IDS[1]]
    assert await store.inbox_archive("u1", [IDS[0]], T0 + 400) == []
    assert await store.inbox_unread_count("u1") == 2  # an archived unread one no longer counts
    assert await page_ids(store) == [IDS[4], IDS[3], IDS[2]]
    assert await page_ids(store, archived=True) == [IDS[1], IDS[0]]  # the archived ones only
    assert await page_ids(store, archived=True, unread=True) == [IDS[0]]
    # read_all marks what the unread count counts: IDS[0] (archived, unread) stays as it is
    assert await store.inbox_mark_all_read("u1", T0 + 500) == ([IDS[3], IDS[4]], IDS[4])
    assert await store.inbox_unread_count("u1") == 0
    assert (await store.inbox_get("u1", IDS[0])).read_ms is None
    assert await store.inbox_get("u2", IDS[0]) is None


async def test_read_all_up_to_an_id_in_delivery_order(store):
    await store.record([], [entry(0), entry(1), entry(2, seq=30), entry(3, seq=25)])
    await store.inbox_mark_read("u1", [IDS[0]], T0)
    assert await store.inbox_mark_all_read("u1", T0 + 1, IDS[3]) == ([IDS[1], IDS[3]], IDS[3])  # 2 came after 3
    assert await store.inbox_unread_count("u1") == 1
    assert await store.inbox_mark_all_read("u1", T0 + 2) == ([IDS[2]], IDS[2])
    assert await store.inbox_mark_all_read("u1", T0 + 3) == ([], IDS[2])
    assert await store.inbox_mark_all_read("nobody", T0) == ([], None)


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
