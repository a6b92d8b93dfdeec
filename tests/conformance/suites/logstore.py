"""The LogStore port's conformance checks (reactor/ports.py, LogStore): what a Cassandra must answer as the embedded one does.

Reads, the web inbox and cursors are checked call by call. Writes are checked by their
observable outcomes (the statuses, timelines, histories and counters after some status
events, the inbox after some reads): every write goes through `record()` and the inbox
helpers below, the Recorder's own path (actors/recorder.py: read what the planner needs
through the port, plan, `apply`), so these checks pin what the planner and a backend do
together.

The last part checks the write plan alone (LogStore.apply, key_states, inbox_unread;
protocol/write_plan.py): a backend applies each operation exactly as stated and decides
nothing. Timeline rows and inbox entries are inserted if absent, a transition is counted
once per mark however often it is applied, a status is moved (in every copy: `statuses`
and `history`) only from the steps its guard lists, and then whatever the lifecycle would
say, inbox times are set only where unset. So a plan applied twice, or again after part
of it was applied (as a backend without transactions may leave it), leaves what applying
it once leaves.

Cursors are opaque: a check only passes back what the store gave, and expects every row
exactly once across the pages, also when rows arrive between two pages; a malformed cursor,
another user's, or the other listing's is refused with InvalidCursor (the routes' 400).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from functools import partial
from typing import Any

import msgspec
import trio

from actors.domain.write_planner import Planner
from actors.recorder import change_inbox, record_events
from protocol.channels import Channel, Priority
from protocol.ids import make_notification_id
from protocol.lifecycle import Status, Step, can_advance, position, reachable, timeline_step
from protocol.messages import InboxEntry, StatusEvent
from protocol.write_plan import (
    AddStep, CountOnce, Counter, InboxAction, InboxChange, InboxField, MoveStatus, SetInboxTime, WritePlan,
)
from reactor.ports import InboxRow, InvalidCursor, LogStore, NotFresh
from tests.conformance.backends import Harness

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR = 3_600_000
DAY_MS = 86_400_000
DAY = "2024-01-01"


async def record(logstore: LogStore, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry] = ()) -> None:
    """How the checks write status events and inbox entries: as the Recorder does (read, plan, apply)."""
    await record_events(logstore, events, inbox)


async def mark_read(logstore: LogStore, user_id: str, ids: Sequence[str], at_ms: int) -> list[str]:
    """Mark entries read as the Recorder does; the ids that were unread."""
    return list((await change_inbox(logstore, InboxChange(user_id, InboxAction.READ, at_ms, ids=tuple(ids)))).ids)


async def mark_all_read(logstore: LogStore, user_id: str, at_ms: int, through_id: str | None = None) -> tuple[list[str], str | None]:
    """Mark read every unread entry up to through_id as the Recorder does; (the ids marked, the newest id covered)."""
    changed = await change_inbox(logstore, InboxChange(user_id, InboxAction.READ_ALL, at_ms, through=through_id))
    return list(changed.ids), changed.through


async def archive(logstore: LogStore, user_id: str, ids: Sequence[str], at_ms: int) -> list[str]:
    """Archive entries as the Recorder does; the ids that were not archived yet."""
    return list((await change_inbox(logstore, InboxChange(user_id, InboxAction.ARCHIVE, at_ms, ids=tuple(ids)))).ids)


def nid(ms: int, n: int = 0) -> str:
    return make_notification_id(ms, n)


def ev(
    notification_id: str, status: Status, at_ms: int, *, channel: Channel = Channel.EMAIL, user: str = "u1",
    created_ms: int | None = None, detail: str = "", **extra: Any,
) -> StatusEvent:
    return StatusEvent(
        notification_id, user, channel, status, at_ms, detail=detail,
        created_ms=T0 if created_ms is None else created_ms, priority=Priority.HIGH, **extra,
    )


def client_ev(notification_id: str, status: Status, at_ms: int, detail: str = "", user: str = "u1") -> StatusEvent:
    """A subscriber's ack or read of a web notification."""
    return ev(notification_id, status, at_ms, channel=Channel.WEB, detail=detail, user=user, client=True)


def entry(n: int, user: str = "u1", seq: int | None = None, **extra: Any) -> InboxEntry:
    return InboxEntry(nid(T0 + n, n), user, T0 + n, f"n{n}", seq=10 + n if seq is None else seq, **extra)


def day(at_ms: int) -> str:
    """The UTC date of a time, as daily_counts takes it."""
    return dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.timezone.utc).date().isoformat()


async def snapshot(logstore: Any, ids: list[str], user: str = "u1", date: str = DAY) -> tuple[object, ...]:
    """Everything observable about some notifications, for before/after comparisons."""
    statuses = [await logstore.statuses(i) for i in ids]
    events = [await logstore.events(i) for i in ids]
    counts = {c: await logstore.daily_counts(date, c.value) for c in Channel}
    history, _ = await logstore.history(user, limit=1000)
    return statuses, events, counts, history


async def history_pages(logstore: Any, user: str, limit: int, **filters: Any) -> list[list[tuple[int, str, str]]]:
    """Every page of a user's history, following the cursors."""
    out, cursor = [], None
    for _ in range(1000):
        rows, cursor = await logstore.history(user, cursor=cursor, limit=limit, **filters)
        assert len(rows) <= limit, f"a page of {len(rows)} rows with limit {limit}"
        out.append([(r.created_ms, r.notification_id, r.channel) for r in rows])
        if cursor is None:
            return out
    raise AssertionError("the history's cursors never end")


async def inbox_ids(logstore: Any, user: str = "u1", limit: int = 2, **kwargs: Any) -> list[str]:
    """Every id of an inbox listing, following the cursor with small pages."""
    ids: list[str] = []
    cursor = None
    for _ in range(1000):
        rows, cursor = await logstore.inbox_page(user, cursor=cursor, limit=limit, **kwargs)
        assert len(rows) <= limit, f"a page of {len(rows)} rows with limit {limit}"
        ids += [r.entry.notification_id for r in rows]
        if cursor is None:
            return ids
    raise AssertionError("the inbox's cursors never end")


# -- statuses, timelines and counters, after events -------------------------------------------


async def check_legal_transitions_advance(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n = nid(T0)
        for i, status in enumerate([Status.ACCEPTED, Status.QUEUED, Status.SENT, Status.DELIVERED]):
            await record(logstore, [ev(n, status, T0 + i, detail=f"d{i}")])
            [row] = await logstore.statuses(n)
            assert (row.status, row.updated_ms, row.detail) == (status.value, T0 + i, f"d{i}")
        assert (row.user_id, row.channel, row.priority, row.created_ms) == ("u1", "email", "high", T0)
        assert [(e.channel, e.status, e.at_ms, e.detail) for e in await logstore.events(n)] == [
            ("email", "accepted", T0, "d0"), ("email", "queued", T0 + 1, "d1"), ("email", "sent", T0 + 2, "d2"),
            ("email", "delivered", T0 + 3, "d3"),
        ]
        assert await logstore.daily_counts(DAY, "email") == {"sent": 1, "delivered": 1, "failed": 0}
        [logged], cursor = await logstore.history("u1")
        assert cursor is None
        assert (logged.notification_id, logged.status, logged.detail, logged.created_ms) == (n, "delivered", "d3", T0)
        assert await logstore.statuses(nid(T0, 1)) == [] and await logstore.events(nid(T0, 1)) == []


async def check_skipping_ahead_counts_the_skipped_steps(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n = nid(T0)
        await record(logstore, [ev(n, Status.QUEUED, T0, channel=Channel.WEB), ev(n, Status.DELIVERED, T0 + 5, channel=Channel.WEB)])
        assert [r.status for r in await logstore.statuses(n)] == ["delivered"]
        assert await logstore.daily_counts(DAY, "web") == {"sent": 1, "delivered": 1, "failed": 0}


# (the statuses reached, an event that may not move the status, the timeline after it: status or (status, at - T0))
ILLEGAL_CASES: list[tuple[list[Status], Status, list[Any]]] = [
    # a repeat of an earlier step with the same detail: nothing new
    ([Status.QUEUED, Status.SENT, Status.DELIVERED], Status.QUEUED, ["queued", "sent", "delivered"]),
    # a late step: in its lifecycle place, before the step that overtook it, at that step's time at the latest
    ([Status.QUEUED, Status.FAILED], Status.SENT, [("queued", 0), ("sent", 1), ("failed", 1)]),
    ([Status.QUEUED, Status.SENT, Status.DELIVERED, Status.READ], Status.OPENED,
     [("queued", 0), ("sent", 1), ("delivered", 2), ("opened", 3), ("read", 3)]),
    # off the path (a conflict): kept at its own place along the lifecycle, its time clamped as a late one's
    ([Status.QUEUED, Status.DEAD_LETTERED], Status.DELIVERED, [("queued", 0), ("delivered", 1), ("dead_lettered", 1)]),
    ([Status.QUEUED, Status.SENT, Status.DELIVERED], Status.FAILED, [("queued", 0), ("sent", 1), ("delivered", 2), ("failed", 100)]),
]


async def check_an_event_off_the_lifecycle_never_moves_the_status(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        for k, (reached, illegal, timeline) in enumerate(ILLEGAL_CASES):
            base = T0 + k * DAY_MS  # a day of its own: its own counters
            n = nid(base, k)
            await record(logstore, [ev(n, s, base + i, created_ms=base) for i, s in enumerate(reached)])
            before = await logstore.daily_counts(day(base), "email")
            await record(logstore, [ev(n, illegal, base + 100, created_ms=base)])
            [row] = await logstore.statuses(n)
            assert (row.status, row.updated_ms) == (reached[-1].value, base + len(reached) - 1), (k, row)
            assert await logstore.daily_counts(day(base), "email") == before, k
            logged = [r for r in (await logstore.history("u1", limit=100))[0] if r.notification_id == n]
            assert [r.status for r in logged] == [reached[-1].value], k
            expected = [(t, base + i) if isinstance(t, str) else (t[0], base + t[1]) for i, t in enumerate(timeline)]
            assert [(e.status, e.at_ms) for e in await logstore.events(n)] == expected, k


async def check_channels_and_counters_are_apart(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n = nid(T0)
        await record(logstore, [
            ev(n, Status.QUEUED, T0, channel=Channel.EMAIL),
            ev(n, Status.QUEUED, T0, channel=Channel.SMS),
            ev(n, Status.FAILED, T0 + HOUR, channel=Channel.EMAIL, detail="bounce"),
            ev(n, Status.SENT, T0 + 2 * HOUR, channel=Channel.SMS),
            ev(n, Status.DEAD_LETTERED, T0 + 25 * HOUR, channel=Channel.SMS),  # the next UTC day
        ])
        assert {r.channel: r.status for r in await logstore.statuses(n)} == {"email": "failed", "sms": "dead_lettered"}
        assert await logstore.daily_counts(DAY, "email") == {"sent": 0, "delivered": 0, "failed": 1}
        assert await logstore.daily_counts(DAY, "sms") == {"sent": 1, "delivered": 0, "failed": 0}
        assert await logstore.daily_counts("2024-01-02", "sms") == {"sent": 0, "delivered": 0, "failed": 1}
        assert await logstore.daily_counts(DAY, "push") == {"sent": 0, "delivered": 0, "failed": 0}
        assert await logstore.daily_counts("2023-12-31", "email") == {"sent": 0, "delivered": 0, "failed": 0}


async def check_a_redelivered_batch_changes_nothing(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        ids = [nid(T0 + i, i) for i in range(5)]
        batch = [
            ev(n, s, T0 + 10 * i + j, channel=c)
            for i, n in enumerate(ids)
            for c in (Channel.EMAIL, Channel.PUSH)
            for j, s in enumerate([Status.ACCEPTED, Status.QUEUED, Status.SENT, Status.DELIVERED])
        ]
        inbox = [InboxEntry(ids[0], "u1", T0, "hi", seq=1)]
        await record(logstore, batch, inbox)
        first = await snapshot(logstore, ids)
        await record(logstore, batch, inbox)
        assert await snapshot(logstore, ids) == first
        # A redelivered record is processed again later: the same statuses and details, new times.
        await record(logstore, [ev(e.notification_id, e.status, e.at_ms + HOUR, channel=e.channel, detail=e.detail) for e in batch])
        assert await snapshot(logstore, ids) == first
        assert await logstore.inbox_after("u1", None) == inbox
        assert await logstore.daily_counts(DAY, "email") == {"sent": 5, "delivered": 5, "failed": 0}


async def check_a_status_repeated_in_one_batch_is_recorded_once(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n = nid(T0)
        await record(logstore, [ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1), ev(n, Status.SENT, T0 + 2), ev(n, Status.QUEUED, T0 + 3)])
        assert [(e.status, e.at_ms) for e in await logstore.events(n)] == [("queued", T0), ("sent", T0 + 1)]
        assert await logstore.daily_counts(DAY, "email") == {"sent": 1, "delivered": 0, "failed": 0}


async def check_a_first_event_without_created_ms_uses_its_time(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n = nid(T0)
        await record(logstore, [ev(n, Status.QUEUED, T0 + 7, created_ms=0), ev(n, Status.SENT, T0 + 9)])
        [row] = await logstore.statuses(n)
        assert (row.created_ms, row.status) == (T0 + 7, "sent")
        [logged], _ = await logstore.history("u1")
        assert (logged.created_ms, logged.status) == (T0 + 7, "sent")


async def check_only_a_replay_leaves_dead_lettered(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n = nid(T0)
        await record(logstore, [ev(n, Status.QUEUED, T0), ev(n, Status.DEAD_LETTERED, T0 + 1)])
        await record(logstore, [ev(n, Status.QUEUED, T0 + 2, detail="late redelivery")])
        assert [r.status for r in await logstore.statuses(n)] == ["dead_lettered"]
        replay = ev(n, Status.QUEUED, T0 + 3, detail="replayed from the DLQ", replay=True)
        await record(logstore, [replay, ev(n, Status.SENT, T0 + 4), ev(n, Status.DELIVERED, T0 + 5)])
        assert [r.status for r in await logstore.statuses(n)] == ["delivered"]
        assert await logstore.daily_counts(DAY, "email") == {"sent": 1, "delivered": 1, "failed": 1}


async def check_a_replay_starts_a_round_whose_steps_are_rows_of_their_own(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n = nid(T0)
        failed = [ev(n, Status.QUEUED, T0), ev(n, Status.QUEUED, T0, detail="attempt 1 failed"),
                  ev(n, Status.DEAD_LETTERED, T0, detail="after 2 attempt(s): down")]
        await record(logstore, [ev(n, Status.ACCEPTED, T0), *failed])
        replay = ev(n, Status.QUEUED, T0, detail="replayed from the dead-letter queue (1)", replay=True)
        await record(logstore, [replay, *failed[1:]])  # the same details again, in the same millisecond
        assert [(e.status, e.detail) for e in await logstore.events(n)] == [
            ("accepted", ""), ("queued", ""), ("queued", "attempt 1 failed"), ("dead_lettered", "after 2 attempt(s): down"),
            ("queued", "replayed from the dead-letter queue (1)"), ("queued", "attempt 1 failed"),
            ("dead_lettered", "after 2 attempt(s): down"),
        ]
        before = await snapshot(logstore, [n])
        await record(logstore, [replay, *failed[1:]])  # redelivered: nothing new
        assert await snapshot(logstore, [n]) == before
        assert [r.status for r in await logstore.statuses(n)] == ["dead_lettered"]


async def check_a_late_step_is_shown_before_the_one_that_overtook_it(h: Harness[Any]) -> None:
    """The web ack race: the client's `delivered` reaches the store before the consumer's `sent`."""
    async with h.open() as logstore:
        n = nid(T0)
        await record(logstore, [ev(n, Status.ACCEPTED, T0, channel=Channel.WEB), ev(n, Status.QUEUED, T0, channel=Channel.WEB)])
        await record(logstore, [client_ev(n, Status.DELIVERED, T0 + 3, "acknowledged by the client")])
        await record(logstore, [ev(n, Status.SENT, T0 + 5, channel=Channel.WEB, detail="in the inbox")])
        assert [(e.status, e.at_ms, e.detail) for e in await logstore.events(n)] == [
            ("accepted", T0, ""), ("queued", T0, ""),
            ("sent", T0 + 3, "in the inbox"),  # at the ack's time at the latest
            ("delivered", T0 + 3, "acknowledged by the client"),
        ]
        [row] = await logstore.statuses(n)
        assert (row.status, row.updated_ms) == ("delivered", T0 + 3)
        assert await logstore.daily_counts(DAY, "web") == {"sent": 1, "delivered": 1, "failed": 0}
        # Ingress's events after the consumer's (another order the bus allows): still first.
        m = nid(T0, 1)
        await record(logstore, [ev(m, Status.SENT, T0 + 9)])
        await record(logstore, [ev(m, Status.ACCEPTED, T0 + 10), ev(m, Status.QUEUED, T0 + 10)])
        assert [(e.status, e.at_ms) for e in await logstore.events(m)] == [("accepted", T0 + 9), ("queued", T0 + 9), ("sent", T0 + 9)]


async def check_a_client_event_moves_only_its_users_existing_row(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        unknown, theirs, mine = nid(T0, 1), nid(T0, 2), nid(T0, 3)
        await record(logstore, [client_ev(unknown, Status.DELIVERED, T0 + 1, "acknowledged by the client")])
        assert await logstore.statuses(unknown) == [] and await logstore.events(unknown) == []  # a client never creates a row
        await record(logstore, [ev(theirs, Status.SENT, T0, channel=Channel.WEB, user="u2")])
        await record(logstore, [client_ev(theirs, Status.DELIVERED, T0 + 1, "acknowledged by the client")])  # u1 acks u2's
        assert [(r.user_id, r.status) for r in await logstore.statuses(theirs)] == [("u2", "sent")]
        assert [e.status for e in await logstore.events(theirs)] == ["sent"]
        assert await logstore.history("u1") == ([], None)
        assert await logstore.daily_counts(DAY, "web") == {"sent": 1, "delivered": 0, "failed": 0}

        await record(logstore, [ev(mine, Status.QUEUED, T0, channel=Channel.WEB), ev(mine, Status.SENT, T0 + 1, channel=Channel.WEB)])
        await record(logstore, [client_ev(mine, Status.DELIVERED, T0 + 2, "acknowledged by the client")])
        before = await snapshot(logstore, [mine])
        await record(logstore, [
            client_ev(mine, Status.DELIVERED, T0 + 3, "delivered over SSE"),  # a second session: moves nothing, adds nothing
            client_ev(mine, Status.DELIVERED, T0 + 4, "acknowledged by the client"),
        ])
        assert await snapshot(logstore, [mine]) == before
        await record(logstore, [client_ev(mine, Status.READ, T0 + 5, "marked read")])
        await record(logstore, [client_ev(mine, Status.DELIVERED, T0 + 6, "returned by a long-poll")])  # after the read
        assert [e.status for e in await logstore.events(mine)] == ["queued", "sent", "delivered", "read"]
        assert [r.status for r in await logstore.statuses(mine)] == ["read"]


async def check_history_rows_carry_the_template_tag(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n, m = nid(T0), nid(T0 + 1, 1)
        await record(logstore, [ev(n, Status.QUEUED, T0, template="welcome@3#B"), ev(n, Status.SENT, T0 + 1),
                                ev(m, Status.QUEUED, T0 + 1, created_ms=T0 + 1)])
        rows, _ = await logstore.history("u1")
        assert [(r.notification_id, r.template) for r in rows] == [(m, ""), (n, "welcome@3#B")]
        assert [(r.status, r.template) for r in await logstore.statuses(n)] == [("sent", "welcome@3#B")]


def _random_sequences(count: int) -> list[tuple[list[Status], list[int]]]:
    """Event sequences (1-8 statuses) and where to cut them into batches, the same every run."""
    rng = random.Random(20240101)
    statuses = list(Status)
    return [
        ([rng.choice(statuses) for _ in range(rng.randint(1, 8))], sorted(rng.sample(range(1, 8), rng.randint(0, 3))))
        for _ in range(count)
    ]


async def check_any_event_sequence_follows_the_lifecycle(h: Harness[Any]) -> None:
    """Folding can_advance over the events, in any batching, gives the stored status; the timeline keeps every
    distinct step once, in lifecycle order (no step after one it leads to), its times never going back;
    the counters count what was reached; recording the events again changes nothing."""
    async with h.open() as logstore:
        for k, (statuses, cuts) in enumerate(_random_sequences(60)):
            base = T0 + k * DAY_MS  # a day of its own: its own counters
            expected: Status | None = None
            reached: list[Status] = []
            conflicts = False  # an event off the path: its row keeps its own time, which a later step may precede
            for s in statuses:
                conflicts |= timeline_step(expected, s) is Step.CONFLICT
                if can_advance(expected, s):
                    expected = s
                    reached.append(s)
            n = nid(base, k)
            events = [ev(n, s, base + i, created_ms=base) for i, s in enumerate(statuses)]
            bounds = [0, *(c for c in cuts if c < len(events)), len(events)]
            for a, b in zip(bounds, bounds[1:]):
                await record(logstore, events[a:b])
            [row] = await logstore.statuses(n)
            assert expected is not None and row.status == expected.value, (statuses, cuts, row.status)
            rows = await logstore.events(n)
            timeline = [Status(e.status) for e in rows]
            assert sorted(timeline) == sorted(set(statuses)), (statuses, timeline)
            for i, earlier in enumerate(timeline):
                for later in timeline[i + 1:]:
                    assert earlier not in reachable(later), (statuses, timeline)
            times = [e.at_ms for e in rows]
            assert conflicts or times == sorted(times), (statuses, rows)
            counts = await logstore.daily_counts(day(base), "email")
            delivery_path = {Status.SENT, Status.DELIVERED, Status.OPENED, Status.READ}
            assert counts["sent"] == int(any(s in delivery_path for s in reached)), (statuses, counts)
            assert counts["failed"] == int(expected in (Status.FAILED, Status.DEAD_LETTERED)), (statuses, counts)
            before = (await logstore.statuses(n), rows, counts)
            await record(logstore, events)
            assert (await logstore.statuses(n), await logstore.events(n), await logstore.daily_counts(day(base), "email")) == before


async def check_concurrent_writers_and_readers(h: Harness[Any]) -> None:
    async with h.open() as logstore:

        async def writer(k: int) -> None:
            for j in range(5):
                n = nid(T0 + k * 100 + j, k)
                await record(logstore, [ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1)])

        async def reader() -> None:
            for _ in range(10):
                rows, _ = await logstore.history("u1", limit=5)
                assert len(rows) <= 5

        async with trio.open_nursery() as nursery:
            for k in range(8):
                nursery.start_soon(writer, k)
                nursery.start_soon(reader)
        assert await logstore.daily_counts(DAY, "email") == {"sent": 40, "delivered": 0, "failed": 0}
        assert len((await logstore.history("u1", limit=100))[0]) == 40


async def check_a_batch_of_2000_events_in_one_call(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        ids = [nid(T0 + i, i) for i in range(500)]
        batch = [
            ev(n, s, T0 + j, user=f"u{i % 7}")
            for i, n in enumerate(ids)
            for j, s in enumerate([Status.ACCEPTED, Status.QUEUED, Status.SENT, Status.DELIVERED])
        ]
        await record(logstore, batch)
        assert await logstore.daily_counts(DAY, "email") == {"sent": 500, "delivered": 500, "failed": 0}
        assert [r.status for r in await logstore.statuses(ids[123])] == ["delivered"]
        assert len(await logstore.events(ids[499])) == 4
        rows, _ = await logstore.history("u3", limit=1000)
        assert len(rows) == len([i for i in range(500) if i % 7 == 3])


# -- the history and its cursor ------------------------------------------------------------------


async def check_history_pages_are_newest_first_without_gap_or_repeat(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        # 10 notifications x 2 channels; pairs share a created_ms: the id breaks the tie, then the channel.
        ids = [nid(T0 + (i // 2) * HOUR, i) for i in range(10)]
        created = {n: T0 + (i // 2) * HOUR for i, n in enumerate(ids)}
        await record(
            logstore,
            [ev(n, Status.QUEUED, created[n] + 1, channel=c, created_ms=created[n]) for n in ids for c in (Channel.EMAIL, Channel.SMS)]
            + [ev(nid(T0 + 5, 99), Status.QUEUED, T0, user="someone-else")],
        )
        everything = sorted(((created[n], n, c) for n in ids for c in ("email", "sms")), reverse=True)

        got = await history_pages(logstore, "u1", 7)
        assert [len(p) for p in got] == [7, 7, 6]
        assert [row for p in got for row in p] == everything

        got = await history_pages(logstore, "u1", 4, channel="sms")
        assert [row for p in got for row in p] == [r for r in everything if r[2] == "sms"]

        since, until = T0 + HOUR, T0 + 4 * HOUR  # three creation hours: 6 notifications
        got = await history_pages(logstore, "u1", 2, channel="email", since_ms=since, until_ms=until)
        assert [row for p in got for row in p] == [r for r in everything if r[2] == "email" and since <= r[0] < until]

        exact = await history_pages(logstore, "u1", 10)  # an exact multiple ends without an empty page
        assert [len(p) for p in exact] == [10, 10]
        assert await logstore.history("nobody") == ([], None)


async def check_a_history_cursor_holds_while_notifications_arrive(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        older = [nid(T0 + i * HOUR, i) for i in range(6)]
        await record(logstore, [ev(n, Status.QUEUED, T0 + i * HOUR, created_ms=T0 + i * HOUR) for i, n in enumerate(older)])
        first, cursor = await logstore.history("u1", limit=2)
        newer = [nid(T0 + (10 + i) * HOUR, 10 + i) for i in range(3)]
        await record(logstore, [ev(n, Status.QUEUED, T0 + (10 + i) * HOUR, created_ms=T0 + (10 + i) * HOUR) for i, n in enumerate(newer)])
        rest: list[str] = []
        while cursor is not None:
            rows, cursor = await logstore.history("u1", cursor=cursor, limit=2)
            rest += [r.notification_id for r in rows]
        assert [r.notification_id for r in first] + rest == list(reversed(older))


async def refused(listing: Any, cursor: str) -> bool:
    """Whether a listing call refuses the cursor with InvalidCursor (what the routes answer 400 to; any other error is a 500)."""
    try:
        await listing(cursor=cursor)
    except InvalidCursor:
        return True
    except Exception as exc:
        raise AssertionError(
            f"the cursor {cursor!r} was refused with {type(exc).__name__}, not InvalidCursor: a 500, not a 400"
        ) from exc
    return False


async def check_history_refuses_a_malformed_cursor(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        await record(logstore, [ev(nid(T0), Status.QUEUED, T0)])
        for cursor in ("", "!!!", "not base64 at all", "\u00e9\u00e9\u00e9\u00e9", "e30", "[[[[[[[[[["):
            assert await refused(partial(logstore.history, "u1"), cursor), f"the cursor {cursor!r} was taken"


async def check_a_cursor_is_its_users_and_its_listings_own(h: Harness[Any]) -> None:
    """A cursor passed back for another user, or to the other listing, is refused: it is no cursor this listing gave."""
    async with h.open() as logstore:
        await record(logstore, [ev(nid(T0 + i, i), Status.QUEUED, T0, user=u) for i in range(3) for u in ("u1", "u2")],
                     [entry(i, user=u) for i in range(3) for u in ("u1", "u2")])
        _, history_cursor = await logstore.history("u1", limit=2)
        _, inbox_cursor = await logstore.inbox_page("u1", limit=2)
        assert history_cursor is not None and inbox_cursor is not None
        assert len((await logstore.history("u1", cursor=history_cursor))[0]) == 1  # the user's own: taken
        assert len((await logstore.inbox_page("u1", cursor=inbox_cursor))[0]) == 1
        assert await refused(partial(logstore.history, "u2"), history_cursor), "u1's history cursor was taken for u2"
        assert await refused(partial(logstore.inbox_page, "u2"), inbox_cursor), "u1's inbox cursor was taken for u2"
        assert await refused(partial(logstore.inbox_page, "u1"), history_cursor), "a history cursor was taken by the inbox"
        assert await refused(partial(logstore.history, "u1"), inbox_cursor), "an inbox cursor was taken by the history"


# -- the web inbox ---------------------------------------------------------------------------------


async def check_inbox_after_is_oldest_first_and_strict(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        entries = [entry(i, body="b", url="https://x/y", data={"k": i}) for i in range(6)]
        await record(logstore, [], [entries[i] for i in (3, 0, 5, 1)])
        await record(logstore, [], [entries[i] for i in (2, 4, 0)] + [InboxEntry(entries[1].notification_id, "u2", T0, "other")])
        assert await logstore.inbox_after("u1", None) == entries
        assert await logstore.inbox_after("u1", entries[2].notification_id) == entries[3:]
        assert await logstore.inbox_after("u1", entries[1].notification_id, limit=2) == entries[2:4]
        assert await logstore.inbox_after("u1", entries[-1].notification_id) == []
        assert [e.title for e in await logstore.inbox_after("u2", None)] == ["other"]
        assert await logstore.inbox_after("nobody", None) == []


async def check_inbox_follows_delivery_order_not_id_order(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        # Ids are assigned before the bus append: a later id can be delivered first.
        late_id, early_id = "01J0000000000000000000000B", "01J0000000000000000000000A"
        first = InboxEntry(late_id, "u9", T0, "delivered first", seq=10)
        second = InboxEntry(early_id, "u9", T0, "delivered second", seq=11)
        await record(logstore, [], [first, second])
        assert await logstore.inbox_after("u9", None) == [first, second]
        assert await logstore.inbox_after("u9", late_id) == [second]
        assert await logstore.inbox_after("u9", early_id) == []
        # an id this user never received: everything, rather than risk a gap
        assert await logstore.inbox_after("u9", "01J0000000000000000000000Z") == [first, second]
        rows, _ = await logstore.inbox_page("u9")
        assert [r.entry.notification_id for r in rows] == [early_id, late_id]  # newest delivery first


async def check_a_redelivered_inbox_entry_keeps_the_first_and_its_read_state(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        await record(logstore, [], [entry(0), entry(1)])
        assert await mark_read(logstore, "u1", [entry(0).notification_id], T0 + 100) == [entry(0).notification_id]
        assert await archive(logstore, "u1", [entry(1).notification_id], T0 + 200) == [entry(1).notification_id]
        await record(logstore, [], [entry(0), msgspec.structs.replace(entry(1), title="replaced?")])  # redelivered
        assert await logstore.inbox_get("u1", entry(0).notification_id) == InboxRow(entry(0), T0 + 100, None)
        assert await logstore.inbox_get("u1", entry(1).notification_id) == InboxRow(entry(1), None, T0 + 200)
        assert await logstore.inbox_unread_count("u1") == 0


async def check_inbox_pages_are_newest_first_in_delivery_order(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        # delivery order (seq) differs from id order for 3 and 4: the inbox follows delivery
        await record(logstore, [], [entry(0), entry(1), entry(2), entry(3, seq=20), entry(4, seq=19), entry(5, user="u2")])
        ids = [entry(i).notification_id for i in range(6)]
        assert await inbox_ids(logstore) == [ids[3], ids[4], ids[2], ids[1], ids[0]]
        assert await inbox_ids(logstore, limit=5) == [ids[3], ids[4], ids[2], ids[1], ids[0]]
        assert await inbox_ids(logstore, "u2") == [ids[5]]
        assert await inbox_ids(logstore, "nobody") == []
        rows, cursor = await logstore.inbox_page("u1", limit=5)
        assert cursor is None and [r.entry for r in rows] == [entry(3, seq=20), entry(4, seq=19), entry(2), entry(1), entry(0)]
        for bad in ("", "!!", "not base64 at all", "e30"):
            assert await refused(partial(logstore.inbox_page, "u1"), bad), f"the inbox cursor {bad!r} was taken"


async def check_an_inbox_cursor_holds_while_notifications_arrive(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        await record(logstore, [], [entry(i) for i in range(5)])
        first, cursor = await logstore.inbox_page("u1", limit=2)
        await record(logstore, [], [entry(i) for i in range(5, 8)])  # newer deliveries meanwhile
        await archive(logstore, "u1", [entry(4).notification_id], T0 + 1)  # one already listed leaves the page
        rest: list[str] = []
        while cursor is not None:
            rows, cursor = await logstore.inbox_page("u1", cursor=cursor, limit=2)
            rest += [r.entry.notification_id for r in rows]
        assert [r.entry.notification_id for r in first] + rest == [entry(i).notification_id for i in (4, 3, 2, 1, 0)]


async def check_read_archive_and_unread_count(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        ids = [entry(i).notification_id for i in range(10)]
        await record(logstore, [], [entry(i) for i in range(5)])
        assert await logstore.inbox_unread_count("u1") == 5
        assert await mark_read(logstore, "u1", [ids[1], ids[2], ids[9]], T0 + 100) == [ids[1], ids[2]]  # 9 is not there
        assert await mark_read(logstore, "u1", [ids[1]], T0 + 200) == []  # already read: keeps its first read time
        assert await logstore.inbox_get("u1", ids[1]) == InboxRow(entry(1), T0 + 100, None)
        assert await mark_read(logstore, "u2", [ids[3]], T0) == []  # another user's: untouched
        assert await logstore.inbox_unread_count("u1") == 3
        assert await inbox_ids(logstore, unread=True) == [ids[4], ids[3], ids[0]]

        assert await archive(logstore, "u1", [ids[0], ids[1]], T0 + 300) == [ids[0], ids[1]]
        assert await archive(logstore, "u1", [ids[0]], T0 + 400) == []
        assert await logstore.inbox_unread_count("u1") == 2  # an archived unread one no longer counts
        assert await inbox_ids(logstore) == [ids[4], ids[3], ids[2]]
        assert await inbox_ids(logstore, archived=True) == [ids[1], ids[0]]  # the archived ones only
        assert await inbox_ids(logstore, archived=True, unread=True) == [ids[0]]
        assert await logstore.inbox_get("u1", ids[0]) == InboxRow(entry(0), None, T0 + 300)
        # read-all marks what the unread count counts: ids[0] (archived, unread) stays as it is
        assert await mark_all_read(logstore, "u1", T0 + 500) == ([ids[3], ids[4]], ids[4])
        assert await logstore.inbox_unread_count("u1") == 0
        assert await logstore.inbox_get("u1", ids[0]) == InboxRow(entry(0), None, T0 + 300)
        assert await logstore.inbox_get("u2", ids[0]) is None
        assert await logstore.inbox_get("u1", ids[9]) is None


async def check_read_all_up_to_an_id_in_delivery_order(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        ids = [entry(i).notification_id for i in range(4)]
        await record(logstore, [], [entry(0), entry(1), entry(2, seq=30), entry(3, seq=25)])
        await mark_read(logstore, "u1", [ids[0]], T0)
        assert await mark_all_read(logstore, "u1", T0 + 1, ids[3]) == ([ids[1], ids[3]], ids[3])  # 2 came after 3
        assert await logstore.inbox_unread_count("u1") == 1
        assert await mark_all_read(logstore, "u1", T0 + 2) == ([ids[2]], ids[2])
        assert await mark_all_read(logstore, "u1", T0 + 3) == ([], ids[2])
        assert await mark_all_read(logstore, "nobody", T0) == ([], None)
        assert (await logstore.inbox_get("u1", ids[0])).read_ms == T0  # kept its first read time


async def check_everything_is_still_there_after_a_restart(h: Harness[Any]) -> None:
    n = nid(T0)
    async with h.open() as logstore:
        await record(logstore, [ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1)], [InboxEntry(n, "u1", T0, "hi")])
        await mark_read(logstore, "u1", [n], T0 + 2)
        before = await snapshot(logstore, [n])
    async with h.open() as logstore:
        assert await snapshot(logstore, [n]) == before
        assert await logstore.inbox_get("u1", n) == InboxRow(InboxEntry(n, "u1", T0, "hi"), T0 + 2, None)
        await record(logstore, [ev(n, Status.DELIVERED, T0 + 3)])
        assert [r.status for r in await logstore.statuses(n)] == ["delivered"]


# -- the write plan, applied as stated (LogStore.apply, key_states, inbox_unread) ---------------

IDS = [nid(T0 + i, i) for i in range(12)]
EMAIL = Channel.EMAIL.value


def move(n: str, status: Status, after: set[int], *, round_: int = 0, create: bool = False, at: int = T0,
         detail: str = "", template: str = "", user: str = "u1") -> MoveStatus:
    """A move of (n, email) to `status` in `round_`, applied from the steps in `after`."""
    return MoveStatus(
        n, EMAIL, user, "high", T0, status, position(round_, status), at, detail, frozenset(after), create, template=template,
    )


def current(rows: Sequence[Any]) -> list[tuple[str, str, int, str]]:
    return [(r.status, r.user_id, r.updated_ms, r.detail) for r in rows]


async def history_of(logstore: LogStore, n: str, user: str = "u1") -> list[tuple[str, str, int, str]]:
    rows, _ = await logstore.history(user, limit=1000)
    return current([r for r in rows if r.notification_id == n])


async def check_steps_are_inserted_if_absent(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n = IDS[0]
        await logstore.apply(WritePlan(steps=(AddStep(n, EMAIL, 1, Status.QUEUED, "", T0 + 5),)))
        await logstore.apply(WritePlan(steps=(
            AddStep(n, EMAIL, 1, Status.QUEUED, "", T0 + 9),  # the same row again: the first stays
            AddStep(n, EMAIL, 1, Status.QUEUED, "attempt 1 failed", T0 + 6),  # another detail: a row of its own
            AddStep(n, EMAIL, 3, Status.DELIVERED, "", T0 + 2),
            AddStep(n, EMAIL, 2, Status.SENT, "", T0 + 7),  # read in lifecycle order, not by time
        )))
        assert [(e.status, e.at_ms - T0, e.detail) for e in await logstore.events(n)] == [
            ("queued", 5, ""), ("queued", 6, "attempt 1 failed"), ("sent", 7, ""), ("delivered", 2, ""),
        ]


async def check_a_transition_counts_once(h: Harness[Any]) -> None:
    """A count comes with the move of its key that makes the transition; counted once per mark."""
    async with h.open() as logstore:
        n, m = IDS[1], IDS[2]
        sent = CountOnce(n, EMAIL, 0, Counter.SENT, DAY, 3)
        to_sent = WritePlan(
            moves=(move(n, Status.SENT, {0, 1}, create=True),), counts=(sent, msgspec.structs.replace(sent, hour=5)),
        )
        await logstore.apply(to_sent)
        await logstore.apply(to_sent)  # applied again: counted already
        assert await logstore.daily_counts(DAY, EMAIL) == {"sent": 1, "delivered": 0, "failed": 0}
        await logstore.apply(WritePlan(
            moves=(move(n, Status.DELIVERED, {position(0, Status.SENT)}),),
            counts=(msgspec.structs.replace(sent, counter=Counter.DELIVERED),),
        ))
        dead = WritePlan(
            moves=(move(m, Status.DEAD_LETTERED, {0}, create=True),), counts=(CountOnce(m, EMAIL, 0, Counter.FAILED, DAY, 23),),
        )
        await logstore.apply(dead)
        await logstore.apply(WritePlan(  # a replay's round: the same transitions count again, once
            moves=(move(m, Status.SENT, {position(0, Status.DEAD_LETTERED)}, round_=1),),
            counts=(CountOnce(m, EMAIL, 1, Counter.SENT, DAY, 23),),
        ))
        await logstore.apply(dead)  # the first round's plan again, after the second: nothing
        assert await logstore.daily_counts(DAY, EMAIL) == {"sent": 2, "delivered": 1, "failed": 1}
        assert await logstore.daily_counts(DAY, "sms") == {"sent": 0, "delivered": 0, "failed": 0}
        assert await logstore.daily_counts("2024-01-02", EMAIL) == {"sent": 0, "delivered": 0, "failed": 0}


async def check_a_move_applies_only_from_its_guard(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n, missing = IDS[3], IDS[4]
        await logstore.apply(WritePlan(moves=(move(n, Status.QUEUED, {0}, create=True, at=T0 + 1, template="welcome@2#A"),)))
        assert current(await logstore.statuses(n)) == [("queued", "u1", T0 + 1, "")] == await history_of(logstore, n)
        await logstore.apply(WritePlan(moves=(move(n, Status.SENT, {position(0, Status.QUEUED)}, at=T0 + 2, detail="handed over"),)))
        assert current(await logstore.statuses(n)) == [("sent", "u1", T0 + 2, "handed over")] == await history_of(logstore, n)
        assert [r.template for r in await logstore.statuses(n)] == ["welcome@2#A"]  # a move without one keeps it
        # a stale move (planned when the row was queued): the stored step is not in its guard
        await logstore.apply(WritePlan(moves=(move(n, Status.QUEUED, {0, position(0, Status.QUEUED)}, create=True, at=T0 + 3, user="intruder"),)))
        assert current(await logstore.statuses(n)) == [("sent", "u1", T0 + 2, "handed over")] == await history_of(logstore, n)
        # a move of a row that is not there, and may not create it
        await logstore.apply(WritePlan(moves=(move(missing, Status.SENT, {0, position(0, Status.QUEUED)}),)))
        assert await logstore.statuses(missing) == [] and await history_of(logstore, missing) == []
        # in one plan, a stale move and one whose guard holds: only the second
        await logstore.apply(WritePlan(moves=(
            move(n, Status.DELIVERED, {0, position(0, Status.QUEUED)}, at=T0 + 4), move(missing, Status.QUEUED, {0}, create=True, at=T0 + 4),
        )))
        assert current(await logstore.statuses(n)) == [("sent", "u1", T0 + 2, "handed over")] == await history_of(logstore, n)
        assert current(await logstore.statuses(missing)) == [("queued", "u1", T0 + 4, "")] == await history_of(logstore, missing)


async def check_a_move_is_applied_as_stated(h: Harness[Any]) -> None:
    """The backend does not judge a move by the lifecycle: the plan's guard is the whole condition."""
    async with h.open() as logstore:
        n, m = IDS[5], IDS[6]
        dead = position(0, Status.DEAD_LETTERED)
        await logstore.apply(WritePlan(moves=(move(n, Status.DEAD_LETTERED, {0}, create=True),)))
        await logstore.apply(WritePlan(moves=(move(n, Status.QUEUED, {dead}, round_=1, at=T0 + 5, detail="replayed"),)))
        assert current(await logstore.statuses(n)) == [("queued", "u1", T0 + 5, "replayed")] == await history_of(logstore, n)
        [state] = await logstore.key_states([(n, EMAIL)])
        assert (state.status, state.round) == (Status.QUEUED, 1)
        # off the lifecycle's path, but the plan's guard holds: applied
        await logstore.apply(WritePlan(moves=(move(m, Status.DELIVERED, {0}, create=True),)))
        bounced = move(m, Status.FAILED, {position(0, Status.DELIVERED)}, at=T0 + 9, detail="bounced")
        await logstore.apply(WritePlan(moves=(bounced,)))
        assert current(await logstore.statuses(m)) == [("failed", "u1", T0 + 9, "bounced")] == await history_of(logstore, m)


async def check_key_states_read_what_was_applied(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        n, m = IDS[7], IDS[8]
        await logstore.apply(WritePlan(
            steps=(
                AddStep(n, EMAIL, position(0, Status.QUEUED), Status.QUEUED, "", T0),
                AddStep(n, EMAIL, position(0, Status.DEAD_LETTERED), Status.DEAD_LETTERED, "down", T0 + 1),
                AddStep(n, EMAIL, position(1, Status.QUEUED), Status.QUEUED, "replayed", T0 + 2),
            ),
            moves=(move(n, Status.QUEUED, {0}, round_=1, create=True, at=T0 + 2),),
        ))
        assert await logstore.key_states([(m, EMAIL), (n, "sms")]) == []
        [state] = await logstore.key_states([(n, EMAIL), (m, EMAIL)])
        assert (state.notification_id, state.channel, state.user_id) == (n, EMAIL, "u1")
        assert (state.priority, state.created_ms) == ("high", T0)
        assert (state.status, state.round, state.timeline) == (Status.QUEUED, 1, None)
        [state] = await logstore.key_states([(n, EMAIL)], timeline=True)
        assert state.timeline is not None
        # its round's rows only
        assert [(r.step, r.status, r.detail, r.at_ms) for r in state.timeline] == [(position(1, Status.QUEUED), Status.QUEUED, "replayed", T0 + 2)]


async def check_the_inbox_is_written_once(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        a, b, c = IDS[9], IDS[10], IDS[11]
        entries = [InboxEntry(n, "u1", T0 + i, f"n{i}", seq=i) for i, n in enumerate((a, b, c))]
        await logstore.apply(WritePlan(inbox=tuple(entries)))
        await logstore.apply(WritePlan(inbox=(msgspec.structs.replace(entries[0], title="replaced?"),)))
        assert await logstore.inbox_after("u1", None) == entries
        read = SetInboxTime("u1", a, InboxField.READ, T0 + 100)
        await logstore.apply(WritePlan(inbox_times=(read, SetInboxTime("u1", c, InboxField.ARCHIVED, T0 + 100))))
        await logstore.apply(WritePlan(inbox_times=(
            msgspec.structs.replace(read, at_ms=T0 + 200),  # read already: keeps its first time
            SetInboxTime("u1", c, InboxField.ARCHIVED, T0 + 200),  # archived already: the same
            SetInboxTime("u2", b, InboxField.READ, T0 + 200),  # another user's: not there
        )))
        assert [(r.entry.notification_id, r.read_ms, r.archived_ms) for r in (await logstore.inbox_page("u1"))[0]] == [
            (b, None, None), (a, T0 + 100, None),
        ]
        assert await logstore.inbox_get("u1", c) == InboxRow(entries[2], None, T0 + 100)
        unread = await logstore.inbox_unread("u1")
        assert (unread.ids, unread.top) == ((b,), c)
        unread = await logstore.inbox_unread("u1", a)
        assert (unread.ids, unread.top) == ((), a)
        unread = await logstore.inbox_unread("u1", "01J0000000000000000000000Z")
        assert (unread.ids, unread.top) == ((), None)
        assert (await logstore.inbox_unread("nobody")).top is None


def a_batch(day_: int) -> tuple[list[StatusEvent], list[InboxEntry]]:
    """Two notifications on a day (days after T0), each queued, sent, delivered (web: acked), one of them late."""
    at = T0 + day_ * DAY_MS
    n, m = nid(at, 1), nid(at, 2)
    events = [
        ev(n, Status.QUEUED, at, created_ms=at),
        ev(n, Status.DELIVERED, at + 5, detail="ok", created_ms=at),
        ev(n, Status.SENT, at + 9, created_ms=at),  # late
        ev(m, Status.QUEUED, at, channel=Channel.WEB, created_ms=at),
        ev(m, Status.SENT, at + 3, channel=Channel.WEB, detail="in the inbox", created_ms=at),
        ev(m, Status.DELIVERED, at + 4, channel=Channel.WEB, detail="acked", created_ms=at, client=True),
    ]
    return events, [InboxEntry(m, "u1", at, "hi", seq=day_)]


async def observe_day(logstore: LogStore, day_: int) -> tuple[Any, ...]:
    """What a_batch(day_) left, its times relative to its day."""
    at = T0 + day_ * DAY_MS
    ids = [nid(at, 1), nid(at, 2)]
    strip = [[(r.channel, r.status, r.updated_ms - at, r.detail) for r in await logstore.statuses(i)] for i in ids]
    timeline = [[(e.channel, e.status, e.at_ms - at, e.detail) for e in await logstore.events(i)] for i in ids]
    counts = [await logstore.daily_counts(day(at), c) for c in ("email", "web")]
    rows, _ = await logstore.inbox_page("u1", limit=1000)
    inbox = [(r.entry.title, r.read_ms) for r in rows if r.entry.notification_id in ids]
    return strip, timeline, counts, inbox


async def check_a_plan_applied_again_changes_nothing(h: Harness[Any]) -> None:
    """Once, twice, and after a part of it (as a backend without transactions may leave it): the same."""
    async with h.open() as logstore:
        plans = []
        for d in range(3):
            events, inbox = a_batch(d)
            planner = Planner()
            planner.record(events, inbox)
            plans.append(planner.plan())
        once, twice, resumed = plans
        await logstore.apply(once)
        await logstore.apply(twice)
        await logstore.apply(twice)
        ops = resumed.operations()
        half = ops[: len(ops) // 2 + 1]  # the inbox entry, the steps and some counts
        await logstore.apply(WritePlan(
            inbox=tuple(o for o in half if isinstance(o, InboxEntry)),
            steps=tuple(o for o in half if isinstance(o, AddStep)),
            counts=tuple(o for o in half if isinstance(o, CountOnce)),
        ))
        await logstore.apply(resumed)
        want = await observe_day(logstore, 0)
        assert want[2] == [{"sent": 1, "delivered": 1, "failed": 0}] * 2
        assert await observe_day(logstore, 1) == want
        assert await observe_day(logstore, 2) == want


async def refused_as_not_fresh(logstore: LogStore, plan: WritePlan) -> bool:
    try:
        await logstore.apply(plan)
    except NotFresh:
        return True
    return False


async def check_a_plan_with_a_stored_fresh_key_applies_nothing(h: Harness[Any]) -> None:
    """WritePlan.fresh: keys planned as having no stored status. One of them stored: nothing of the plan (NotFresh)."""
    n, m, k = nid(T0 + 500, 500), nid(T0 + 501, 501), nid(T0 + 502, 502)
    accepted, queued, failed = (position(0, s) for s in (Status.ACCEPTED, Status.QUEUED, Status.FAILED))

    def created(key: str, status: Status, detail: str = "") -> WritePlan:
        """A fresh key's plan, as the Recorder's fast path makes it: accepted, then `status`."""
        return WritePlan(
            steps=(AddStep(key, EMAIL, accepted, Status.ACCEPTED, "", T0), AddStep(key, EMAIL, position(0, status), status, detail, T0)),
            counts=(CountOnce(key, EMAIL, 0, Counter.FAILED, DAY, 0),) if status is Status.FAILED else (),
            moves=(move(key, status, {accepted}, create=True, detail=detail),),
            fresh=((key, EMAIL),),
        )

    async with h.open() as logstore:
        await logstore.apply(created(n, Status.QUEUED))  # unstored: applied
        assert current(await logstore.statuses(n)) == [("queued", "u1", T0, "")] == await history_of(logstore, n)
        timeline = await logstore.events(n)
        both = created(m, Status.FAILED, "opted out")
        both = msgspec.structs.replace(
            both, steps=(*both.steps, AddStep(n, EMAIL, queued, Status.QUEUED, "again", T0 + 1)),
            inbox=(entry(502),), fresh=((m, EMAIL), (n, EMAIL)),
        )
        assert await refused_as_not_fresh(logstore, both)
        assert await logstore.statuses(m) == [] and await logstore.events(m) == [] and await history_of(logstore, m) == []
        assert await logstore.events(n) == timeline and await logstore.inbox_after("u1", None) == []
        assert await logstore.daily_counts(DAY, EMAIL) == {"sent": 0, "delivered": 0, "failed": 0}
        # a stored fresh key the plan does not move (a client's event dropped) refuses it too
        assert await refused_as_not_fresh(logstore, msgspec.structs.replace(created(k, Status.QUEUED), fresh=((k, EMAIL), (n, EMAIL))))
        assert await logstore.statuses(k) == [] and await logstore.events(k) == []
        await logstore.apply(created(m, Status.FAILED, "opted out"))
        assert current(await logstore.statuses(m)) == [("failed", "u1", T0, "opted out")] == await history_of(logstore, m)
        assert [(e.status, e.detail) for e in await logstore.events(m)] == [("accepted", ""), ("failed", "opted out")]
        assert await logstore.daily_counts(DAY, EMAIL) == {"sent": 0, "delivered": 0, "failed": 1}


async def check_an_empty_plan_is_nothing(h: Harness[Any]) -> None:
    async with h.open() as logstore:
        await logstore.apply(WritePlan())
        assert await logstore.key_states([]) == []
        assert await logstore.history("u1") == ([], None)


async def check_concurrent_plans_are_each_there_once_acknowledged(h: Harness[Any]) -> None:
    """Plans applied at once (a backend may share a transaction between them): each is readable, and durable, when its apply returns."""
    count = 30
    seen: dict[int, list[str]] = {}
    async with h.open() as logstore:

        async def write(i: int) -> None:
            n = nid(T0 + i, i)
            await record(logstore, [ev(n, Status.QUEUED, T0 + i, user=f"c{i}"), ev(n, Status.DELIVERED, T0 + i + 1, user=f"c{i}")])
            seen[i] = [r.status for r in await logstore.statuses(n)]

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(write, i)
        assert [i for i in range(count) if seen[i] != ["delivered"]] == []
    async with h.open() as logstore:
        again = [[r.status for r in await logstore.statuses(nid(T0 + i, i))] for i in range(count)]
        assert [i for i in range(count) if again[i] != ["delivered"]] == []
