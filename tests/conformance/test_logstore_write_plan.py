"""Conformance of a LogStore backend: applying write plans (LogStore.apply, key_states, inbox_unread).

What every backend must do with a plan (reactor/ports.py, LogStore.apply; protocol/write_plan.py):
apply each operation exactly as stated and decide nothing: timeline rows and inbox entries
inserted if absent, a transition counted once per mark however often it is applied, a
status moved (in every copy: `statuses` and `history`) only from the steps its guard
lists, and then whatever the lifecycle would say, inbox times set only where unset. So a
plan applied twice, or again after part of it was applied, leaves what applying it once
leaves. Each check is run against the embedded backend, and against deliberately broken
appliers that must fail it: one that ignores the guards (moves whatever is stored), one
that judges moves by the lifecycle itself (and refuses the replay edge), one that counts
again on every apply.

The fixture `logstore` yields the embedded backend; the lead wires these checks to the
shared conformance fixture (every backend present) at merge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.domain.write_planner import Planner
from protocol.channels import Channel, Priority
from protocol.ids import make_notification_id
from protocol.lifecycle import Status, can_advance, position
from protocol.messages import InboxEntry, StatusEvent
from protocol.write_plan import (
    AddStep,
    CountOnce,
    Counter,
    InboxField,
    MoveStatus,
    SetInboxTime,
    WritePlan,
)
from reactor.backends.embedded import SqliteLogStore
from reactor.backends.embedded.log_store import _BUMP_STATS
from reactor.ports import LogStore

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY = "2024-01-01"
DAY_MS = 86_400_000
IDS = [make_notification_id(T0 + i, i) for i in range(12)]
EMAIL = Channel.EMAIL.value


def move(nid: str, status: Status, after: set[int], *, round_: int = 0, create: bool = False, at: int = T0,
         detail: str = "", template: str = "", user: str = "u1") -> MoveStatus:
    return MoveStatus(
        nid, EMAIL, user, "high", T0, status, position(round_, status), at, detail, frozenset(after), create,
        template=template,
    )


def current(rows: list[Any]) -> list[tuple[str, str, int, str]]:
    return [(r.status, r.user_id, r.updated_ms, r.detail) for r in rows]


async def history_of(store: LogStore, nid: str, user: str = "u1") -> list[tuple[str, str, int, str]]:
    rows, _ = await store.history(user, limit=1000)
    return current([r for r in rows if r.notification_id == nid])


# -- the checks: each takes a freshly opened store


async def check_steps_are_inserted_if_absent(store: LogStore) -> None:
    n = IDS[0]
    await store.apply(WritePlan(steps=(AddStep(n, EMAIL, 1, Status.QUEUED, "", T0 + 5),)))
    await store.apply(WritePlan(steps=(
        AddStep(n, EMAIL, 1, Status.QUEUED, "", T0 + 9),  # the same row again: the first stays
        AddStep(n, EMAIL, 1, Status.QUEUED, "attempt 1 failed", T0 + 6),  # another detail: a row of its own
        AddStep(n, EMAIL, 3, Status.DELIVERED, "", T0 + 2),
        AddStep(n, EMAIL, 2, Status.SENT, "", T0 + 7),  # read in lifecycle order, not by time
    )))
    assert [(e.status, e.at_ms - T0, e.detail) for e in await store.events(n)] == [
        ("queued", 5, ""), ("queued", 6, "attempt 1 failed"), ("sent", 7, ""), ("delivered", 2, ""),
    ]


async def check_a_transition_counts_once(store: LogStore) -> None:
    """A count comes with the move of its key that makes the transition; counted once per mark."""
    n, m = IDS[1], IDS[2]
    sent = CountOnce(n, EMAIL, 0, Counter.SENT, DAY, 3)
    to_sent = WritePlan(moves=(move(n, Status.SENT, {0, 1}, create=True),), counts=(sent, msgspec.structs.replace(sent, hour=5)))
    await store.apply(to_sent)
    await store.apply(to_sent)  # applied again: counted already
    assert await store.daily_counts(DAY, EMAIL) == {"sent": 1, "delivered": 0, "failed": 0}
    await store.apply(WritePlan(
        moves=(move(n, Status.DELIVERED, {position(0, Status.SENT)}),),
        counts=(msgspec.structs.replace(sent, counter=Counter.DELIVERED),),
    ))
    dead = WritePlan(
        moves=(move(m, Status.DEAD_LETTERED, {0}, create=True),),
        counts=(CountOnce(m, EMAIL, 0, Counter.FAILED, DAY, 23),),
    )
    await store.apply(dead)
    await store.apply(WritePlan(  # a replay's round: the same transitions count again, once
        moves=(move(m, Status.SENT, {position(0, Status.DEAD_LETTERED)}, round_=1),),
        counts=(CountOnce(m, EMAIL, 1, Counter.SENT, DAY, 23),),
    ))
    await store.apply(dead)  # the first round's plan again, after the second: nothing
    assert await store.daily_counts(DAY, EMAIL) == {"sent": 2, "delivered": 1, "failed": 1}
    assert await store.daily_counts(DAY, "sms") == {"sent": 0, "delivered": 0, "failed": 0}
    assert await store.daily_counts("2024-01-02", EMAIL) == {"sent": 0, "delivered": 0, "failed": 0}


async def check_a_move_applies_only_from_its_guard(store: LogStore) -> None:
    n, missing = IDS[3], IDS[4]
    await store.apply(WritePlan(moves=(move(n, Status.QUEUED, {0}, create=True, at=T0 + 1, template="welcome@2#A"),)))
    assert current(await store.statuses(n)) == [("queued", "u1", T0 + 1, "")] == await history_of(store, n)
    await store.apply(WritePlan(moves=(move(n, Status.SENT, {1}, at=T0 + 2, detail="handed over"),)))
    assert current(await store.statuses(n)) == [("sent", "u1", T0 + 2, "handed over")] == await history_of(store, n)
    assert [r.template for r in await store.statuses(n)] == ["welcome@2#A"]  # a move without one keeps it
    # a stale move (planned when the row was queued): the stored step is not in its guard
    await store.apply(WritePlan(moves=(move(n, Status.QUEUED, {0, 1}, create=True, at=T0 + 3, user="intruder"),)))
    assert current(await store.statuses(n)) == [("sent", "u1", T0 + 2, "handed over")] == await history_of(store, n)
    # a move of a row that is not there, and may not create it
    await store.apply(WritePlan(moves=(move(missing, Status.SENT, {0, 1}),)))
    assert await store.statuses(missing) == [] and await history_of(store, missing) == []
    # in one plan, a stale move and one whose guard holds: only the second
    await store.apply(WritePlan(moves=(
        move(n, Status.DELIVERED, {0, 1}, at=T0 + 4), move(missing, Status.QUEUED, {0}, create=True, at=T0 + 4),
    )))
    assert current(await store.statuses(n)) == [("sent", "u1", T0 + 2, "handed over")] == await history_of(store, n)
    assert current(await store.statuses(missing)) == [("queued", "u1", T0 + 4, "")] == await history_of(store, missing)


async def check_a_move_is_applied_as_stated(store: LogStore) -> None:
    """The applier does not judge a move by the lifecycle: the plan's guard is the whole condition."""
    n, m = IDS[5], IDS[6]
    dead = position(0, Status.DEAD_LETTERED)
    await store.apply(WritePlan(moves=(move(n, Status.DEAD_LETTERED, {0}, create=True),)))
    await store.apply(WritePlan(moves=(move(n, Status.QUEUED, {dead}, round_=1, at=T0 + 5, detail="replayed"),)))
    assert current(await store.statuses(n)) == [("queued", "u1", T0 + 5, "replayed")] == await history_of(store, n)
    [state] = await store.key_states([(n, EMAIL)])
    assert (state.status, state.round) == (Status.QUEUED, 1)
    # off the lifecycle's path, but the plan's guard holds: applied
    await store.apply(WritePlan(moves=(move(m, Status.DELIVERED, {0}, create=True),)))
    await store.apply(WritePlan(moves=(move(m, Status.FAILED, {position(0, Status.DELIVERED)}, at=T0 + 9, detail="bounced"),)))
    assert current(await store.statuses(m)) == [("failed", "u1", T0 + 9, "bounced")] == await history_of(store, m)


async def check_key_states_read_what_was_applied(store: LogStore) -> None:
    n, m = IDS[7], IDS[8]
    await store.apply(WritePlan(
        steps=(
            AddStep(n, EMAIL, position(0, Status.QUEUED), Status.QUEUED, "", T0),
            AddStep(n, EMAIL, position(0, Status.DEAD_LETTERED), Status.DEAD_LETTERED, "down", T0 + 1),
            AddStep(n, EMAIL, position(1, Status.QUEUED), Status.QUEUED, "replayed", T0 + 2),
        ),
        moves=(move(n, Status.QUEUED, {0}, round_=1, create=True, at=T0 + 2),),
    ))
    assert await store.key_states([(m, EMAIL), (n, "sms")]) == []
    [state] = await store.key_states([(n, EMAIL), (m, EMAIL)])
    assert (state.notification_id, state.channel, state.user_id, state.priority, state.created_ms) == (n, EMAIL, "u1", "high", T0)
    assert (state.status, state.round, state.timeline) == (Status.QUEUED, 1, None)
    [state] = await store.key_states([(n, EMAIL)], timeline=True)
    assert state.timeline is not None
    assert [(r.step, r.status, r.detail, r.at_ms) for r in state.timeline] == [(101, Status.QUEUED, "replayed", T0 + 2)]  # its round only


async def check_the_inbox_is_written_once(store: LogStore) -> None:
    a, b, c = IDS[9], IDS[10], IDS[11]
    entries = [InboxEntry(nid, "u1", T0 + i, f"n{i}", seq=i) for i, nid in enumerate((a, b, c))]
    await store.apply(WritePlan(inbox=tuple(entries)))
    await store.apply(WritePlan(inbox=(msgspec.structs.replace(entries[0], title="replaced?"),)))
    assert await store.inbox_after("u1", None) == entries
    read = SetInboxTime("u1", a, InboxField.READ, T0 + 100)
    await store.apply(WritePlan(inbox_times=(read, SetInboxTime("u1", c, InboxField.ARCHIVED, T0 + 100))))
    await store.apply(WritePlan(inbox_times=(
        msgspec.structs.replace(read, at_ms=T0 + 200),  # read already: keeps its first time
        SetInboxTime("u2", b, InboxField.READ, T0 + 200),  # another user's: not there
    )))
    assert [(r.entry.notification_id, r.read_ms, r.archived_ms) for r in (await store.inbox_page("u1"))[0]] == [
        (b, None, None), (a, T0 + 100, None),
    ]
    assert (await store.inbox_get("u1", c)).archived_ms == T0 + 100  # type: ignore[union-attr]
    unread = await store.inbox_unread("u1")
    assert (unread.ids, unread.top) == ((b,), c)
    unread = await store.inbox_unread("u1", a)
    assert (unread.ids, unread.top) == ((), a)
    unread = await store.inbox_unread("u1", "01J0000000000000000000000Z")
    assert (unread.ids, unread.top) == ((), None)
    assert (await store.inbox_unread("nobody")).top is None


def a_batch(day: int) -> tuple[list[StatusEvent], list[InboxEntry]]:
    """Two notifications on `day` (days after T0), each queued, sent, delivered (web: acked), one of them late."""
    at = T0 + day * DAY_MS
    n, m = make_notification_id(at, 1), make_notification_id(at, 2)
    events = [
        StatusEvent(n, "u1", Channel.EMAIL, Status.QUEUED, at, created_ms=at, priority=Priority.HIGH),
        StatusEvent(n, "u1", Channel.EMAIL, Status.DELIVERED, at + 5, detail="ok", created_ms=at),
        StatusEvent(n, "u1", Channel.EMAIL, Status.SENT, at + 9, created_ms=at),  # late
        StatusEvent(m, "u1", Channel.WEB, Status.QUEUED, at, created_ms=at),
        StatusEvent(m, "u1", Channel.WEB, Status.SENT, at + 3, detail="in the inbox", created_ms=at),
        StatusEvent(m, "u1", Channel.WEB, Status.DELIVERED, at + 4, detail="acked", created_ms=at, client=True),
    ]
    return events, [InboxEntry(m, "u1", at, "hi", seq=day)]


async def observe_day(store: LogStore, day: int) -> tuple[Any, ...]:
    at = T0 + day * DAY_MS
    ids = [make_notification_id(at, 1), make_notification_id(at, 2)]
    date = f"2024-01-{day + 1:02d}"
    strip = [[(r.channel, r.status, r.updated_ms - at, r.detail) for r in await store.statuses(i)] for i in ids]
    timeline = [[(e.channel, e.status, e.at_ms - at, e.detail) for e in await store.events(i)] for i in ids]
    counts = [await store.daily_counts(date, c) for c in ("email", "web")]
    inbox = [(r.entry.title, r.read_ms) for r in (await store.inbox_page("u1", limit=1000))[0] if r.entry.notification_id in ids]
    return strip, timeline, counts, inbox


async def check_a_plan_applied_again_changes_nothing(store: LogStore) -> None:
    """Once, twice, and after a part of it (as a backend without transactions may leave it): the same."""
    plans = []
    for day in range(3):
        events, inbox = a_batch(day)
        planner = Planner()
        planner.record(events, inbox)
        plans.append(planner.plan())
    once, twice, resumed = plans
    await store.apply(once)
    await store.apply(twice)
    await store.apply(twice)
    ops = resumed.operations()
    half = ops[: len(ops) // 2 + 1]  # the inbox entry, the steps and some counts
    await store.apply(WritePlan(
        inbox=tuple(o for o in half if isinstance(o, InboxEntry)),
        steps=tuple(o for o in half if isinstance(o, AddStep)),
        counts=tuple(o for o in half if isinstance(o, CountOnce)),
    ))
    await store.apply(resumed)
    want = await observe_day(store, 0)
    assert want[2] == [{"sent": 1, "delivered": 1, "failed": 0}] * 2
    assert await observe_day(store, 1) == want
    assert await observe_day(store, 2) == want


async def check_an_empty_plan_is_nothing(store: LogStore) -> None:
    await store.apply(WritePlan())
    assert await store.key_states([]) == []


CHECKS: list[Callable[[LogStore], Awaitable[None]]] = [
    check_steps_are_inserted_if_absent,
    check_a_transition_counts_once,
    check_a_move_applies_only_from_its_guard,
    check_a_move_is_applied_as_stated,
    check_key_states_read_what_was_applied,
    check_the_inbox_is_written_once,
    check_a_plan_applied_again_changes_nothing,
    check_an_empty_plan_is_nothing,
]


@pytest.fixture
async def logstore(tmp_path: Path) -> AsyncIterator[LogStore]:
    """The embedded LogStore, freshly opened (the lead switches this to the shared backend fixture)."""
    store = SqliteLogStore(tmp_path / "logs.sqlite3")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_the_backend_applies_write_plans(logstore: LogStore, check: Callable[[LogStore], Awaitable[None]]) -> None:
    await check(logstore)


# -- broken appliers: each must fail the checks that pin what it gets wrong


class GuardlessLogStore(SqliteLogStore):
    """Moves whatever is stored: it reads the row and makes the move's guard hold (it decides to move)."""

    async def apply(self, plan: WritePlan) -> None:
        stored = {(k.notification_id, k.channel): k for k in await self.key_states([(m.notification_id, m.channel) for m in plan.moves])}
        moves = tuple(
            msgspec.structs.replace(m, after=m.after | {position(k.round, k.status)}) if (k := stored.get((m.notification_id, m.channel))) else m
            for m in plan.moves
        )
        await super().apply(msgspec.structs.replace(plan, moves=moves))


class JudgingLogStore(SqliteLogStore):
    """Checks each move against the lifecycle itself and drops those it finds illegal (so it refuses the replay edge)."""

    async def apply(self, plan: WritePlan) -> None:
        stored = {(k.notification_id, k.channel): k for k in await self.key_states([(m.notification_id, m.channel) for m in plan.moves])}
        moves = tuple(
            m for m in plan.moves
            if (k := stored.get((m.notification_id, m.channel))) is None or can_advance(k.status, m.status)
        )
        await super().apply(msgspec.structs.replace(plan, moves=moves))


class DoubleCountingLogStore(SqliteLogStore):
    """Counts every CountOnce it is given, each time, whether its move applies or not."""

    async def apply(self, plan: WritePlan) -> None:
        await super().apply(msgspec.structs.replace(plan, counts=()))
        bumps = [(c.date, c.channel, c.hour, *(int(c.counter is k) for k in Counter)) for c in plan.counts]
        await self._write(lambda db: db.executemany(_BUMP_STATS, bumps))


BROKEN = [
    (GuardlessLogStore, check_a_move_applies_only_from_its_guard),
    (JudgingLogStore, check_a_move_is_applied_as_stated),
    (DoubleCountingLogStore, check_a_transition_counts_once),
    (DoubleCountingLogStore, check_a_plan_applied_again_changes_nothing),
]


@pytest.mark.parametrize(("broken", "check"), BROKEN, ids=lambda x: getattr(x, "__name__", "").removeprefix("check_"))
async def test_a_broken_applier_is_caught(tmp_path: Path, broken: type[SqliteLogStore], check: Callable[[LogStore], Awaitable[None]]) -> None:
    store = broken(tmp_path / "logs.sqlite3")
    await store.open()
    try:
        with pytest.raises(AssertionError):
            await check(store)
    finally:
        await store.close()
