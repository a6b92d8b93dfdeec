"""The embedded LogStore with the Recorder's planner: lifecycle guarding, idempotent replay, pagination, inbox
sync, durability.

The store is written as the Recorder writes it (tests/logstore_writes.py: read, plan, apply), so these
tests pin what the Recorder and the log store do together, as they pinned the log store alone before
the rules moved to the planner."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import AsyncIterator

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.channels import Channel, Priority
from protocol.ids import make_notification_id
from protocol.lifecycle import Status, Step, can_advance, reachable, timeline_step
from protocol.messages import InboxEntry, StatusEvent
from reactor.backends.embedded import SqliteLogStore
from tests.logstore_writes import WritingLogStore
from reactor.backends.embedded.log_store import encode_cursor
from reactor.ports import InvalidCursor

pytestmark = pytest.mark.trio

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR = 3_600_000
DAY = "2024-01-01"


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
async def store(tmp_path: Path) -> AsyncIterator[SqliteLogStore]:
    s = WritingLogStore(SqliteLogStore(tmp_path / "log.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def snapshot(store: SqliteLogStore, ids: list[str], user: str = "u1") -> tuple[object, ...]:
    """Everything observable about some notifications, for before/after comparisons."""
    statuses = [await store.statuses(i) for i in ids]
    events = [await store.events(i) for i in ids]
    counts = {c: await store.daily_counts(DAY, c.value) for c in Channel}
    history, _ = await store.history(user, limit=1000)
    return statuses, events, counts, history


async def test_legal_transitions_advance(store: SqliteLogStore) -> None:
    n = nid(T0)
    for i, status in enumerate([Status.ACCEPTED, Status.QUEUED, Status.SENT, Status.DELIVERED]):
        await store.record([ev(n, status, T0 + i, detail=f"d{i}")])
        [row] = await store.statuses(n)
        assert (row.status, row.updated_ms, row.detail) == (status.value, T0 + i, f"d{i}")
    assert row.user_id == "u1" and row.channel == "email" and row.priority == "high" and row.created_ms == T0
    assert [(e.status, e.at_ms) for e in await store.events(n)] == [
        ("accepted", T0), ("queued", T0 + 1), ("sent", T0 + 2), ("delivered", T0 + 3),
    ]
    assert await store.daily_counts(DAY, "email") == {"sent": 1, "delivered": 1, "failed": 0}
    [logged], cursor = await store.history("u1")
    assert cursor is None
    assert (logged.notification_id, logged.status, logged.detail) == (n, "delivered", "d3")


async def test_skipping_ahead_counts_the_skipped_steps(store: SqliteLogStore) -> None:
    n = nid(T0)
    await store.record([ev(n, Status.QUEUED, T0, channel=Channel.WEB), ev(n, Status.DELIVERED, T0 + 5, channel=Channel.WEB)])
    [row] = await store.statuses(n)
    assert row.status == "delivered"
    assert await store.daily_counts(DAY, "web") == {"sent": 1, "delivered": 1, "failed": 0}


@pytest.mark.parametrize(
    ("reached", "illegal", "timeline"),
    [
        # a repeat of an earlier step with the same detail: nothing new
        ([Status.QUEUED, Status.SENT, Status.DELIVERED], Status.QUEUED, ["queued", "sent", "delivered"]),
        # a late step: in its lifecycle place, before the step that overtook it, at that step's time at the latest
        ([Status.QUEUED, Status.FAILED], Status.SENT, [("queued", 0), ("sent", 1), ("failed", 1)]),
        ([Status.QUEUED, Status.SENT, Status.DELIVERED, Status.READ], Status.OPENED,
         [("queued", 0), ("sent", 1), ("delivered", 2), ("opened", 3), ("read", 3)]),
        # off the path (a conflict): kept at its own place along the lifecycle, its time clamped as a late one's
        ([Status.QUEUED, Status.DEAD_LETTERED], Status.DELIVERED, [("queued", 0), ("delivered", 1), ("dead_lettered", 1)]),
        ([Status.QUEUED, Status.SENT, Status.DELIVERED], Status.FAILED, [("queued", 0), ("sent", 1), ("delivered", 2), ("failed", 100)]),
    ],
)
async def test_illegal_transitions_do_not_move_the_status(
    store: SqliteLogStore, reached: list[Status], illegal: Status, timeline: list
) -> None:
    n = nid(T0)
    await store.record([ev(n, s, T0 + i) for i, s in enumerate(reached)])
    before = await store.daily_counts(DAY, "email")
    await store.record([ev(n, illegal, T0 + 100)])
    [row] = await store.statuses(n)
    assert row.status == reached[-1].value
    assert row.updated_ms == T0 + len(reached) - 1
    assert await store.daily_counts(DAY, "email") == before
    [logged], _ = await store.history("u1")
    assert logged.status == reached[-1].value
    expected = [(t, T0 + i) if isinstance(t, str) else (t[0], T0 + t[1]) for i, t in enumerate(timeline)]
    assert [(e.status, e.at_ms) for e in await store.events(n)] == expected


async def test_failure_counts_and_channels_are_independent(store: SqliteLogStore) -> None:
    n = nid(T0)
    await store.record([
        ev(n, Status.QUEUED, T0, channel=Channel.EMAIL),
        ev(n, Status.QUEUED, T0, channel=Channel.SMS),
        ev(n, Status.FAILED, T0 + HOUR, channel=Channel.EMAIL, detail="bounce"),
        ev(n, Status.SENT, T0 + 2 * HOUR, channel=Channel.SMS),
        ev(n, Status.DEAD_LETTERED, T0 + 25 * HOUR, channel=Channel.SMS),  # next UTC day
    ])
    assert {r.channel: r.status for r in await store.statuses(n)} == {"email": "failed", "sms": "dead_lettered"}
    assert await store.daily_counts(DAY, "email") == {"sent": 0, "delivered": 0, "failed": 1}
    assert await store.daily_counts(DAY, "sms") == {"sent": 1, "delivered": 0, "failed": 0}
    assert await store.daily_counts("2024-01-02", "sms") == {"sent": 0, "delivered": 0, "failed": 1}
    assert await store.daily_counts(DAY, "push") == {"sent": 0, "delivered": 0, "failed": 0}


async def test_replaying_a_batch_changes_nothing(store: SqliteLogStore) -> None:
    ids = [nid(T0 + i, i) for i in range(5)]
    batch = [
        ev(n, s, T0 + 10 * i + j, channel=c)
        for i, n in enumerate(ids)
        for c in (Channel.EMAIL, Channel.PUSH)
        for j, s in enumerate([Status.ACCEPTED, Status.QUEUED, Status.SENT, Status.DELIVERED])
    ]
    inbox = [InboxEntry(ids[0], "u1", T0, "hi", seq=1)]
    await store.record(batch, inbox)
    first = await snapshot(store, ids)
    await store.record(batch, inbox)
    assert await snapshot(store, ids) == first
    # A redelivered record is re-processed later: same statuses and details, new timestamps.
    await store.record([ev(e.notification_id, e.status, e.at_ms + HOUR, channel=e.channel, detail=e.detail) for e in batch])
    assert await snapshot(store, ids) == first
    assert await store.inbox_after("u1", None) == inbox
    assert await store.daily_counts(DAY, "email") == {"sent": 5, "delivered": 5, "failed": 0}


async def test_repeated_status_in_one_batch_is_recorded_once(store: SqliteLogStore) -> None:
    n = nid(T0)
    await store.record(
        [ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1), ev(n, Status.SENT, T0 + 2), ev(n, Status.QUEUED, T0 + 3)]
    )
    assert [(e.status, e.at_ms) for e in await store.events(n)] == [("queued", T0), ("sent", T0 + 1)]
    assert await store.daily_counts(DAY, "email") == {"sent": 1, "delivered": 0, "failed": 0}


async def test_first_event_without_created_ms_uses_at_ms(store: SqliteLogStore) -> None:
    n = nid(T0)
    await store.record([ev(n, Status.QUEUED, T0 + 7, created_ms=0), ev(n, Status.SENT, T0 + 9)])
    [row] = await store.statuses(n)
    assert (row.created_ms, row.status) == (T0 + 7, "sent")
    [logged], _ = await store.history("u1")
    assert (logged.created_ms, logged.status) == (T0 + 7, "sent")


async def pages(store: SqliteLogStore, user: str, limit: int, **filters: object) -> list[list[tuple[int, str, str]]]:
    out, cursor = [], None
    while True:
        rows, cursor = await store.history(user, cursor=cursor, limit=limit, **filters)  # type: ignore[arg-type]
        out.append([(r.created_ms, r.notification_id, r.channel) for r in rows])
        if cursor is None:
            return out


async def test_history_pagination_is_gapless_newest_first(store: SqliteLogStore) -> None:
    # 10 notifications x 2 channels; pairs share a created_ms to exercise the id tie-break.
    ids = [nid(T0 + (i // 2) * HOUR, i) for i in range(10)]
    created = {n: T0 + (i // 2) * HOUR for i, n in enumerate(ids)}
    await store.record(
        [
            ev(n, Status.QUEUED, created[n] + 1, channel=c, created_ms=created[n])
            for n in ids
            for c in (Channel.EMAIL, Channel.SMS)
        ]
        + [ev(nid(T0 + 5, 99), Status.QUEUED, T0, user="someone-else")]
    )
    everything = sorted(((created[n], n, c) for n in ids for c in ("email", "sms")), reverse=True)

    got = await pages(store, "u1", 7)
    assert [len(p) for p in got] == [7, 7, 6]
    assert [row for p in got for row in p] == everything

    got = await pages(store, "u1", 4, channel="sms")
    assert [len(p) for p in got] == [4, 4, 2]
    assert [row for p in got for row in p] == [r for r in everything if r[2] == "sms"]

    since, until = T0 + HOUR, T0 + 4 * HOUR  # three creation hours -> 6 notifications
    got = await pages(store, "u1", 2, channel="email", since_ms=since, until_ms=until)
    assert [len(p) for p in got] == [2, 2, 2]
    assert [row for p in got for row in p] == [r for r in everything if r[2] == "email" and since <= r[0] < until]

    exact = await pages(store, "u1", 10)  # an exact multiple ends without an empty page
    assert [len(p) for p in exact] == [10, 10]
    assert await store.history("nobody") == ([], None)


async def test_history_rejects_a_malformed_cursor(store: SqliteLogStore) -> None:
    await store.record([ev(nid(T0), Status.QUEUED, T0)])
    bad = ["", "!!!", "not base64 at all", "e30", encode_cursor(1, "x", "y")[:-3] + "@@@",
           "WzEsMl0", "WyJhIiwiYiIsImMiXQ", "W3RydWUsImEiLCJiIl0", "\u00e9\u00e9\u00e9\u00e9"]
    # e30 = {}, WzEsMl0 = [1,2], WyJhIiwiYiIsImMiXQ = ["a","b","c"], W3RydWUsImEiLCJiIl0 = [true,"a","b"]
    for cursor in bad:
        with pytest.raises(InvalidCursor, match="invalid cursor"):
            await store.history("u1", cursor=cursor)
        with pytest.raises(InvalidCursor, match="invalid cursor"):  # an inbox cursor is the backend's too
            await store.inbox_page("u1", cursor=cursor)
    with pytest.raises(InvalidCursor):  # a history cursor is no inbox cursor
        await store.inbox_page("u1", cursor=encode_cursor(T0 + 1, "", ""))
    rows, _ = await store.history("u1", cursor=encode_cursor(T0 + 1, "", ""))
    assert len(rows) == 1


async def test_inbox_after_is_oldest_first_and_strict(store: SqliteLogStore) -> None:
    ids = [nid(T0 + i * 1000, i) for i in range(6)]
    entries = [
        InboxEntry(n, "u1", T0 + i * 1000, f"t{i}", body="b", url="https://x/y", data={"k": i}, seq=i)
        for i, n in enumerate(ids)
    ]
    await store.record([], [entries[i] for i in (3, 0, 5, 1)])
    await store.record([], [entries[i] for i in (2, 4, 0)] + [InboxEntry(ids[1], "u2", T0, "other")])
    await store.record([], [InboxEntry(ids[0], "u1", T0, "replaced?")])  # insert-or-ignore keeps the first
    assert await store.inbox_after("u1", None) == entries
    assert await store.inbox_after("u1", ids[2]) == entries[3:]
    assert await store.inbox_after("u1", ids[1], limit=2) == entries[2:4]
    assert await store.inbox_after("u1", ids[-1]) == []
    assert [e.title for e in await store.inbox_after("u2", None)] == ["other"]


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    n = nid(T0)
    store = WritingLogStore(SqliteLogStore(path))
    await store.open()
    await store.record([ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1)], [InboxEntry(n, "u1", T0, "hi")])
    before = await snapshot(store, [n])
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(RuntimeError):
        await store.statuses(n)

    again = WritingLogStore(SqliteLogStore(path))
    await again.open()  # schema creation is idempotent
    try:
        assert await snapshot(again, [n]) == before
        assert await again.inbox_after("u1", None) == [InboxEntry(n, "u1", T0, "hi")]
        await again.record([ev(n, Status.DELIVERED, T0 + 2)])
        assert [r.status for r in await again.statuses(n)] == ["delivered"]
    finally:
        await again.close()


async def test_a_batch_of_2000_events_in_one_call(store: SqliteLogStore) -> None:
    ids = [nid(T0 + i, i) for i in range(500)]
    batch = [
        ev(n, s, T0 + j, user=f"u{i % 7}")
        for i, n in enumerate(ids)
        for j, s in enumerate([Status.ACCEPTED, Status.QUEUED, Status.SENT, Status.DELIVERED])
    ]
    assert len(batch) == 2000
    await store.record(batch)
    assert await store.daily_counts(DAY, "email") == {"sent": 500, "delivered": 500, "failed": 0}
    assert [r.status for r in await store.statuses(ids[123])] == ["delivered"]
    assert len(await store.events(ids[499])) == 4
    rows, _ = await store.history("u3", limit=1000)
    assert len(rows) == len([i for i in range(500) if i % 7 == 3])


async def test_concurrent_writers_and_readers(store: SqliteLogStore) -> None:
    async def writer(k: int) -> None:
        for j in range(5):
            n = nid(T0 + k * 100 + j, k)
            await store.record([ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1)])

    async def reader() -> None:
        for _ in range(10):
            await store.history("u1", limit=5)

    async with trio.open_nursery() as nursery:
        for k in range(8):
            nursery.start_soon(writer, k)
            nursery.start_soon(reader)
    assert await store.daily_counts(DAY, "email") == {"sent": 40, "delivered": 0, "failed": 0}


@settings(max_examples=60, deadline=None)
@given(
    statuses=st.lists(st.sampled_from(list(Status)), min_size=1, max_size=8),
    cuts=st.sets(st.integers(1, 7)),
)
async def test_any_event_sequence_follows_the_lifecycle(statuses: list[Status], cuts: set[int]) -> None:
    """Folding can_advance over the events, in any batching, gives the stored status; the timeline keeps
    every distinct step once, in lifecycle order (no step after one it leads to), its times never going back."""
    expected: Status | None = None
    reached: list[Status] = []
    conflicts = False  # an event off the path: its row keeps its own time, which a later step may precede
    for s in statuses:
        conflicts |= timeline_step(expected, s) is Step.CONFLICT
        if can_advance(expected, s):
            expected = s
            reached.append(s)
    delivery_path = {Status.SENT, Status.DELIVERED, Status.OPENED, Status.READ}
    n = nid(T0)
    events = [ev(n, s, T0 + i) for i, s in enumerate(statuses)]
    bounds = [0, *sorted(c for c in cuts if c < len(events)), len(events)]
    with tempfile.TemporaryDirectory() as tmp:
        store = WritingLogStore(SqliteLogStore(Path(tmp) / "p.db"))
        await store.open()
        try:
            for a, b in zip(bounds, bounds[1:]):
                await store.record(events[a:b])
            [row] = await store.statuses(n)
            assert expected is not None and row.status == expected.value
            rows = await store.events(n)
            timeline = [Status(e.status) for e in rows]
            assert sorted(timeline, key=lambda s: s.value) == sorted(set(statuses), key=lambda s: s.value)
            for i, earlier in enumerate(timeline):
                for later in timeline[i + 1:]:
                    assert earlier not in reachable(later), (timeline, statuses)
            times = [e.at_ms for e in rows]
            assert conflicts or times == sorted(times), (rows, statuses)
            counts = await store.daily_counts(DAY, "email")
            assert counts["sent"] == int(any(s in delivery_path for s in reached))
            assert counts["failed"] == int(expected in (Status.FAILED, Status.DEAD_LETTERED))
            before = await snapshot(store, [n])
            await store.record(events)
            assert await snapshot(store, [n]) == before
        finally:
            await store.close()


async def test_inbox_follows_delivery_order_not_id_order(store: SqliteLogStore) -> None:
    # Ids are assigned before the bus append: a later id can be delivered first.
    late_id, early_id = "01J0000000000000000000000B", "01J0000000000000000000000A"
    first = InboxEntry(late_id, "u9", T0, "delivered first", seq=10)
    second = InboxEntry(early_id, "u9", T0, "delivered second", seq=11)
    await store.record([], [first, second])
    assert await store.inbox_after("u9", late_id) == [second]
    assert await store.inbox_after("u9", early_id) == []
    # an id this user never received: everything, rather than risk a gap
    assert await store.inbox_after("u9", "01J0000000000000000000000Z") == [first, second]


async def test_only_a_replay_leaves_dead_lettered(store: SqliteLogStore) -> None:
    n = nid(T0)
    await store.record([ev(n, Status.QUEUED, T0), ev(n, Status.DEAD_LETTERED, T0 + 1)])
    await store.record([ev(n, Status.QUEUED, T0 + 2, detail="late redelivery")])
    assert (await store.statuses(n))[0].status == "dead_lettered"
    replay = msgspec.structs.replace(ev(n, Status.QUEUED, T0 + 3, detail="replayed from the DLQ"), replay=True)
    await store.record([replay, ev(n, Status.SENT, T0 + 4), ev(n, Status.DELIVERED, T0 + 5)])
    assert (await store.statuses(n))[0].status == "delivered"


def client_ev(notification_id: str, status: Status, at_ms: int, detail: str = "") -> StatusEvent:
    return msgspec.structs.replace(ev(notification_id, status, at_ms, channel=Channel.WEB, detail=detail), client=True)


async def test_a_late_step_is_shown_before_the_one_that_overtook_it(store: SqliteLogStore) -> None:
    """The web ack race: the client's `delivered` reaches the store before the consumer's `sent`."""
    n = nid(T0)
    await store.record([ev(n, Status.ACCEPTED, T0, channel=Channel.WEB), ev(n, Status.QUEUED, T0, channel=Channel.WEB)])
    await store.record([client_ev(n, Status.DELIVERED, T0 + 3, "acknowledged by the client")])
    await store.record([ev(n, Status.SENT, T0 + 5, channel=Channel.WEB, detail="in the inbox; pushed to 1 live session(s)")])
    assert [(e.status, e.at_ms, e.detail) for e in await store.events(n)] == [
        ("accepted", T0, ""), ("queued", T0, ""),
        ("sent", T0 + 3, "in the inbox; pushed to 1 live session(s)"),  # at the ack's time at the latest
        ("delivered", T0 + 3, "acknowledged by the client"),
    ]
    [row] = await store.statuses(n)
    assert (row.status, row.updated_ms) == ("delivered", T0 + 3)
    assert await store.daily_counts(DAY, "web") == {"sent": 1, "delivered": 1, "failed": 0}
    # Ingress's events after the consumer's (another order the bus allows): still first
    m = nid(T0, 1)
    await store.record([ev(m, Status.SENT, T0 + 9)])
    await store.record([ev(m, Status.ACCEPTED, T0 + 10), ev(m, Status.QUEUED, T0 + 10)])
    assert [(e.status, e.at_ms) for e in await store.events(m)] == [("accepted", T0 + 9), ("queued", T0 + 9), ("sent", T0 + 9)]


async def test_a_client_event_that_moves_nothing_adds_nothing(store: SqliteLogStore) -> None:
    n = nid(T0)
    await store.record([ev(n, Status.QUEUED, T0, channel=Channel.WEB), ev(n, Status.SENT, T0 + 1, channel=Channel.WEB)])
    await store.record([client_ev(n, Status.DELIVERED, T0 + 2, "acknowledged by the client")])
    before = await snapshot(store, [n])
    await store.record([
        client_ev(n, Status.DELIVERED, T0 + 3, "delivered over SSE"),  # a second session
        client_ev(n, Status.DELIVERED, T0 + 4, "acknowledged by the client"),
    ])
    assert await snapshot(store, [n]) == before
    await store.record([client_ev(n, Status.READ, T0 + 5, "marked read")])
    await store.record([client_ev(n, Status.DELIVERED, T0 + 6, "returned by a long-poll")])  # after the read
    assert [e.status for e in await store.events(n)] == ["queued", "sent", "delivered", "read"]


async def test_a_replay_starts_a_round_whose_steps_are_rows_of_their_own(store: SqliteLogStore) -> None:
    n = nid(T0)
    failed = [ev(n, Status.QUEUED, T0), ev(n, Status.QUEUED, T0, detail="attempt 1 failed"), ev(n, Status.DEAD_LETTERED, T0, detail="after 2 attempt(s): down")]
    await store.record([ev(n, Status.ACCEPTED, T0), *failed])
    replay = msgspec.structs.replace(ev(n, Status.QUEUED, T0, detail="replayed from the dead-letter queue (1)"), replay=True)
    await store.record([replay, *failed[1:]])  # the same details again, in the same millisecond (as under MockClock)
    assert [(e.status, e.detail) for e in await store.events(n)] == [
        ("accepted", ""), ("queued", ""), ("queued", "attempt 1 failed"), ("dead_lettered", "after 2 attempt(s): down"),
        ("queued", "replayed from the dead-letter queue (1)"), ("queued", "attempt 1 failed"), ("dead_lettered", "after 2 attempt(s): down"),
    ]
    before = await snapshot(store, [n])
    await store.record([replay, *failed[1:]])  # redelivered: nothing new
    assert await snapshot(store, [n]) == before
    assert (await store.statuses(n))[0].status == "dead_lettered"


async def test_history_rows_carry_the_template_tag(store: SqliteLogStore) -> None:
    n, m = nid(T0), nid(T0 + 1, 1)
    tagged = msgspec.structs.replace(ev(n, Status.QUEUED, T0), template="welcome@3#B")
    await store.record([tagged, ev(n, Status.SENT, T0 + 1), ev(m, Status.QUEUED, T0 + 1, created_ms=T0 + 1)])
    rows, _ = await store.history("u1")
    assert [(r.notification_id, r.template) for r in rows] == [(m, ""), (n, "welcome@3#B")]


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
        again = WritingLogStore(SqliteLogStore(path))
        await again.open()  # the migration ran once: reopening changes nothing
        try:
            assert [e.status for e in await again.events(n)] == ["accepted", "queued", "dead_lettered", "queued", "queued", "dead_lettered"]
        finally:
            await again.close()
    finally:
        await store.close()
