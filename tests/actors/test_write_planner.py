"""The Recorder's planner (actors/domain/write_planner.py), property-tested.

Random sequences of writes (status events of a few notifications on two channels:
duplicates, late and conflicting steps, replays from the dead-letter queue, client acks
and reads, some of another user; inbox entries; inbox reads, read-alls and archives), cut
into random Recorder batches, checked three ways:

- batching decides nothing: the writes one at a time through the Recorder's path on a
  store without transactions (tests/actors/model_log_store.py, the small model of a
  backend that applies each operation on its own), and the same writes in batches on the
  embedded backend and on the model, leave the same statuses, timelines, histories,
  counters and inboxes, and inbox changes answer the same (what the planner decides is
  pinned by example in the LogStore's conformance suite, tests/conformance/suites/logstore.py);
- a plan is idempotent: applied twice, it leaves what it leaves applied once, and applied
  again after later plans, it changes nothing (its moves' guards no longer hold);
- a crash in the middle of a plan, on the store without transactions, loses nothing and
  adds nothing: applying the plan again, or planning the same batch again from what was
  left (what happens after a real crash: the bus redelivers), ends where one clean apply
  does (but for an ack before its row's creation in one batch: `acks_before_their_row`;
  and, planned again, for a key with events before its own replay in one write:
  `events_before_a_replay`, a known divergence pinned by an expected failure).

(Until the merge of issue 9's item 3 with the conformance harness, the first check also
compared against a frozen copy of the log store as it was before the write plan; it
passed on the merged tree, and the copy was removed.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.domain.write_planner import READ_DETAIL, Planner, move_after
import actors.recorder as recorder_module
from actors.messages import RecordEvents
from actors.recorder import Write, plan_writes, split_batch, write_batch
from protocol.channels import Channel, Priority
from protocol.ids import make_notification_id, notification_id_ms
from protocol.lifecycle import Status, position
from protocol.messages import InboxEntry, StatusEvent
from protocol.write_plan import InboxAction, InboxChange, InboxChanged, InboxState, KeyState, TimelineRow, UnreadThrough
from reactor.backends.embedded import SqliteLogStore
from tests.actors.model_log_store import Crash, ModelLogStore

pytestmark = pytest.mark.trio

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR = 3_600_000
NIDS = [make_notification_id(T0 + i, i) for i in range(3)]
OWNER = {NIDS[0]: "u1", NIDS[1]: "u2", NIDS[2]: "u1"}
USERS = ["u1", "u2", "u3"]
DATES = ["2024-01-01", "2024-01-02"]


@st.composite
def events(draw: Any) -> StatusEvent:
    nid = draw(st.sampled_from(NIDS))
    client = draw(st.sampled_from([False, False, False, True]))
    if client:  # an ack or a read, now and then by another user
        status = draw(st.sampled_from([Status.DELIVERED, Status.OPENED, Status.READ]))
        user = draw(st.sampled_from([OWNER[nid], OWNER[nid], "u3"]))
    else:
        status = draw(st.sampled_from([*Status, Status.QUEUED, Status.DEAD_LETTERED]))  # more rounds of replays
        user = OWNER[nid]
    return StatusEvent(
        nid, user, draw(st.sampled_from([Channel.EMAIL, Channel.WEB])), status,
        T0 + draw(st.integers(0, 30)) * HOUR,  # over two UTC days: counters by date and hour
        detail=draw(st.sampled_from(["", "a", "b"])),
        created_ms=draw(st.sampled_from([0, notification_id_ms(nid)])),
        priority=Priority.HIGH,
        replay=status is Status.QUEUED and not client and draw(st.booleans()),
        template=draw(st.sampled_from(["", "", "", "welcome@1#A"])),
        client=client,
    )


@st.composite
def entries(draw: Any) -> InboxEntry:
    nid = draw(st.sampled_from(NIDS))
    return InboxEntry(nid, OWNER[nid], notification_id_ms(nid), f"title of {nid}", seq=draw(st.integers(0, 4)))


@st.composite
def changes(draw: Any) -> InboxChange:
    action = draw(st.sampled_from(list(InboxAction)))
    at = T0 + draw(st.integers(0, 30)) * HOUR
    user = draw(st.sampled_from(USERS))
    if action is InboxAction.READ_ALL:
        return InboxChange(user, action, at, through=draw(st.sampled_from([None, *NIDS])))
    return InboxChange(user, action, at, ids=tuple(draw(st.lists(st.sampled_from(NIDS), min_size=1, max_size=3))))


writes = st.one_of(
    st.builds(lambda e, i: RecordEvents(tuple(e), tuple(i)), st.lists(events(), max_size=6), st.lists(entries(), max_size=2)),
    changes(),
)


def batches(sequence: list[Write], cuts: set[int]) -> list[list[Write]]:
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(sequence)), len(sequence)]
    return [sequence[a:b] for a, b in zip(bounds, bounds[1:])]


def logged_columns(path: Path) -> list[tuple[Any, ...]]:
    """What the history table holds beyond the port's reads (the seed schema's delivered_at, error_message)."""
    import sqlite3

    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT user_id, notification_id, channel, delivered_ms, error_message, template_id FROM notification_logs"
            " ORDER BY user_id, notification_id, channel"
        ).fetchall()


def model_logged_columns(model: ModelLogStore) -> list[tuple[Any, ...]]:
    return sorted(
        (c.user_id, nid, ch, c.delivered_ms, c.error, c.template or None) for (nid, ch), c in model.history_copy.items()
    )


async def observe(store: Any) -> dict[str, Any]:
    """Everything a reader of the LogStore port sees about the test's notifications and users."""
    return {
        "statuses": [await store.statuses(n) for n in NIDS],
        "events": [await store.events(n) for n in NIDS],
        "history": [(await store.history(u, limit=1000))[0] for u in USERS],
        "counts": [await store.daily_counts(d, c.value) for d in DATES for c in (Channel.EMAIL, Channel.WEB)],
        "inbox": [
            [(r.entry, r.read_ms, r.archived_ms) for r in (await store.inbox_page(u, archived=a, limit=1000))[0]]
            for u in USERS for a in (False, True)
        ],
    }


@st.composite
def replays(draw: Any) -> StatusEvent:
    """An event of one notification's email channel that goes round: dead-lettered, replayed (the same replay
    event redelivered now and then), delivered."""
    status = draw(st.sampled_from([Status.QUEUED, Status.DEAD_LETTERED, Status.SENT, Status.DELIVERED]))
    return StatusEvent(
        NIDS[0], OWNER[NIDS[0]], Channel.EMAIL, status, T0 + draw(st.integers(0, 30)) * HOUR,
        detail=draw(st.sampled_from(["replayed (1)", "replayed (2)", ""])), created_ms=T0,
        replay=status is Status.QUEUED and draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(writes, min_size=1, max_size=10), cuts=st.sets(st.integers(1, 9)))
async def test_a_batch_decides_what_its_writes_decide_one_at_a_time(sequence: list[Write], cuts: set[int]) -> None:
    await compare_batches_with_one_write_at_a_time(sequence, cuts)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.lists(st.builds(lambda e: RecordEvents(tuple(e)), st.lists(replays(), min_size=1, max_size=4)), min_size=1, max_size=8),
    cuts=st.sets(st.integers(1, 7)),
)
async def test_rounds_of_replays_are_decided_alike_in_any_batching(sequence: list[Write], cuts: set[int]) -> None:
    await compare_batches_with_one_write_at_a_time(sequence, cuts)


async def compare_batches_with_one_write_at_a_time(sequence: list[Write], cuts: set[int]) -> None:
    """The writes one at a time through the Recorder's path on the model; in batches on the embedded backend and the model."""
    single = ModelLogStore()
    expected = [answer for w in sequence for answer in await write_batch(single, [w])]
    await assert_batches_write_as(single, expected, sequence, cuts)


async def assert_batches_write_as(reference: ModelLogStore, expected: list, sequence: list[Write], cuts: set[int]) -> None:
    """`sequence` in batches cut at `cuts`, on the embedded backend and on the model: the answers `expected`, and the
    stores as `reference` holds them (what reads show, and every logged column)."""
    want = await observe(reference)
    logged = model_logged_columns(reference)
    with tempfile.TemporaryDirectory() as tmp:
        embedded = SqliteLogStore(Path(tmp) / "logs.db")
        await embedded.open()
        model = ModelLogStore()
        try:
            for store in (embedded, model):
                answers = []
                for batch in batches(sequence, cuts):
                    answers += await write_batch(store, batch)
                assert answers == expected, type(store).__name__
            assert await observe(embedded) == want
            assert await observe(model) == want
            assert logged_columns(Path(tmp) / "logs.db") == logged
            assert model_logged_columns(model) == logged
        finally:
            await embedded.close()


async def apply_batches(store: ModelLogStore, groups: Sequence[Sequence[Write]], *, twice: bool = False) -> None:
    for group in groups:
        plan, _ = await plan_writes(store, group)
        await store.apply(plan)
        if twice:
            await store.apply(plan)


def groups_of(sequence: list[Write], cuts: set[int]) -> list[list[Write]]:
    """The Recorder's groups: each batch cut where it would cut it."""
    return [[batch[i] for i in g] for batch in batches(sequence, cuts) for g in split_batch(batch)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.lists(writes, min_size=1, max_size=10),
    cuts=st.sets(st.integers(1, 9)),
    crash_in=st.integers(0, 20),
    crash_after=st.integers(0, 60),
)
async def test_a_plan_applied_twice_or_after_a_crash_changes_nothing_more(
    sequence: list[Write], cuts: set[int], crash_in: int, crash_after: int
) -> None:
    groups = groups_of(sequence, cuts)
    once = ModelLogStore()
    await apply_batches(once, groups)
    want = once.snapshot()

    twice = ModelLogStore()
    await apply_batches(twice, groups, twice=True)
    assert twice.snapshot() == want
    for plan in list(once.applied_plans):  # each plan again, after the later ones: a move never goes back
        await once.apply(plan)
    assert once.snapshot() == want

    crashed = groups[crash_in % len(groups)]
    for recover in ("apply the plan again", "plan the batch again"):
        store = ModelLogStore()
        if recover == "plan the batch again" and (
            acks_before_their_row(once_before(groups, crashed), crashed) or events_before_a_replay(crashed)
        ):
            continue
        for group in groups:
            plan, _ = await plan_writes(store, group)
            if group is crashed and crash_after < len(plan.operations()):
                store.crash_after = crash_after
                with pytest.raises(Crash):
                    await store.apply(plan)
                if recover == "plan the batch again":
                    plan, _ = await plan_writes(store, group)
            await store.apply(plan)
        assert store.snapshot() == want, (recover, sequence, cuts, crash_in, crash_after)


def once_before(groups: list[list[Write]], crashed: list[Write]) -> set[tuple[str, str]]:
    """The (notification, channel) rows there are before the crashed group, when the groups before it applied."""
    rows: set[tuple[str, str]] = set()
    for group in groups:
        if group is crashed:
            return rows
        rows.update((e.notification_id, e.channel.value) for w in group if isinstance(w, RecordEvents) for e in w.events if not e.client)
    return rows


def acks_before_their_row(rows: set[tuple[str, str]], group: list[Write]) -> bool:
    """Whether a client event of the group comes before the event that creates its row in the same group.

    Planned once, it is dropped (no row yet); planned again after a crash that left the row
    created, it moves it (an ack of the user's own notification, counted once). The one place
    where planning a batch again decides otherwise; a redelivered batch carries no client
    events anyway (they come from live sessions, once), only the consumer's and Ingress's.
    """
    rows = set(rows)
    waiting: set[tuple[str, str]] = set()
    for w in group:
        for e in w.events if isinstance(w, RecordEvents) else ():
            key = (e.notification_id, e.channel.value)
            if e.client and key not in rows:
                waiting.add(key)
            elif not e.client:
                if key in waiting:
                    return True
                rows.add(key)
    return False


def events_before_a_replay(group: list[Write]) -> bool:
    """Whether a write of the group has, for a (notification, channel), an event before a replay event of its own.

    Planned again after a crash that let its move land (the status now in the round the
    replay started), the events before the replay are read as steps of the new round: a
    dead-lettering of the old round dead-letters the new one and counts `failed` again
    (`test_planning_again_after_a_replay_landed_reads_the_old_round_as_the_new`, a known
    divergence, not fixed: an event carries no round, so a planner cannot tell the old
    dead-lettering planned again from a new one). Applying the plan again converges, and
    across writes the Recorder cuts a group before such a replay (split_batch). The embedded
    backend applies a plan in one transaction, so the production Recorder never plans a
    batch again from a partly applied plan.
    """
    for w in group:
        seen: set[tuple[str, str]] = set()
        for e in w.events if isinstance(w, RecordEvents) else ():
            key = (e.notification_id, e.channel.value)
            if e.replay and key in seen:
                return True
            seen.add(key)
    return False


DEAD = StatusEvent(NIDS[0], "u1", Channel.EMAIL, Status.DEAD_LETTERED, T0)
REPLAY = StatusEvent(NIDS[0], "u1", Channel.EMAIL, Status.QUEUED, T0, replay=True)
OTHER = StatusEvent(NIDS[1], "u2", Channel.EMAIL, Status.ACCEPTED, T0)  # a second key, moved after the first


async def crash_after_the_first_move(writes: list[Write], recover: str) -> tuple[ModelLogStore, ModelLogStore]:
    """The writes applied once as the Recorder groups them; and again, the last group crashed right after its
    first move (the replayed key's) and recovered."""
    groups = groups_of(writes, set())
    once = ModelLogStore()
    await apply_batches(once, groups)
    store = ModelLogStore()
    await apply_batches(store, groups[:-1])
    plan, _ = await plan_writes(store, groups[-1])
    store.crash_after = [type(op).__name__ for op in plan.operations()].index("MoveStatus") + 1
    with pytest.raises(Crash):
        await store.apply(plan)
    assert store.status[(NIDS[0], "email")].status is Status.QUEUED  # the replay's move landed
    assert (NIDS[1], "email") not in store.status  # the second key's did not
    if recover == "plan the batch again":
        plan, _ = await plan_writes(store, groups[-1])
    await store.apply(plan)
    return once, store


async def test_applying_the_plan_again_after_a_replay_landed_converges() -> None:
    writes: list[Write] = [RecordEvents((DEAD, REPLAY, OTHER))]
    assert events_before_a_replay(writes)
    once, store = await crash_after_the_first_move(writes, "apply the plan again")
    assert store.snapshot() == once.snapshot()


async def test_a_replay_of_a_key_named_earlier_in_the_group_starts_a_group_so_planning_again_converges() -> None:
    writes: list[Write] = [RecordEvents((DEAD,)), RecordEvents((REPLAY, OTHER))]
    assert split_batch(writes) == [range(0, 1), range(1, 2)]
    assert split_batch([RecordEvents((OTHER,)), RecordEvents((REPLAY,))]) == [range(0, 2)]  # another key: no cut
    once, store = await crash_after_the_first_move(writes, "plan the batch again")
    assert store.snapshot() == once.snapshot()


@pytest.mark.xfail(strict=True, reason=(
    "known divergence, not fixed: planned again, the old round's dead-lettering is read as a step of the round the"
    " replay started (events carry no round); see events_before_a_replay"
))
async def test_planning_again_after_a_replay_landed_reads_the_old_round_as_the_new() -> None:
    once, store = await crash_after_the_first_move([RecordEvents((DEAD, REPLAY, OTHER))], "plan the batch again")
    assert store.status[(NIDS[0], "email")].status is Status.QUEUED  # fails: dead_lettered (of round 1)
    assert store.counters == once.counters  # fails: failed counted twice (rounds 0 and 1)
    assert store.snapshot() == once.snapshot()


# -- the planner on its own


def key_state(nid: str, status: Status, round_: int = 0, channel: str = "email", user: str = "u1") -> KeyState:
    return KeyState(nid, channel, user, "normal", T0, status, round_, ())


async def test_a_move_applies_from_where_it_was_planned_and_from_any_step_before_its_target() -> None:
    assert move_after(0, Status.SENT, None) == {position(0, s) for s in (Status.ACCEPTED, Status.SCHEDULED, Status.QUEUED)}
    assert move_after(0, Status.DELIVERED, position(0, Status.SENT)) == {0, 1, 2, 3}
    # a replay: from the dead-lettering of the round before, or the step it was planned from
    assert move_after(2, Status.SENT, position(1, Status.QUEUED)) == {
        position(1, Status.QUEUED), position(1, Status.DEAD_LETTERED), position(2, Status.ACCEPTED), position(2, Status.SCHEDULED),
        position(2, Status.QUEUED),
    }
    # never from a step the target is not reachable from: a failure does not overwrite a delivery
    assert position(0, Status.DELIVERED) not in move_after(0, Status.FAILED, position(0, Status.QUEUED))


async def test_a_batch_plans_one_move_per_key_its_steps_and_its_counts() -> None:
    n = NIDS[0]
    planner = Planner([key_state(n, Status.QUEUED)])
    planner.record([
        StatusEvent(n, "u1", Channel.EMAIL, Status.SENT, T0 + 5),
        StatusEvent(n, "u1", Channel.EMAIL, Status.SENT, T0 + 6),  # a repeat: nothing new
        StatusEvent(n, "u1", Channel.EMAIL, Status.DELIVERED, T0 + HOUR, detail="ok"),
    ])
    plan = planner.plan()
    assert [(s.status, s.at_ms) for s in plan.steps] == [(Status.SENT, T0 + 5), (Status.DELIVERED, T0 + HOUR)]
    assert [(c.counter.value, c.date, c.hour) for c in plan.counts] == [("sent", "2024-01-01", 0), ("delivered", "2024-01-01", 1)]
    [move] = plan.moves
    assert (move.status, move.step, move.updated_ms, move.detail, move.create) == (Status.DELIVERED, position(0, Status.DELIVERED), T0 + HOUR, "ok", False)
    assert move.delivered_ms == T0 + HOUR and position(0, Status.QUEUED) in move.after


async def test_a_late_step_needs_the_stored_timeline_and_is_placed_from_it() -> None:
    n = NIDS[0]
    planner = Planner([KeyState(n, "web", "u1", "normal", T0, Status.DELIVERED, 0, None)])
    planner.record([StatusEvent(n, "u1", Channel.WEB, Status.SENT, T0 + 9)])
    assert planner.timelines_needed() == [(n, "web")]
    with pytest.raises(RuntimeError, match="was not read"):
        planner.plan()
    timeline = tuple(TimelineRow(position(0, s), s, "", T0 + i) for i, s in enumerate([Status.QUEUED, Status.DELIVERED]))
    planner.add_timelines([KeyState(n, "web", "u1", "normal", T0, Status.DELIVERED, 0, timeline)])
    [step] = planner.plan().steps
    assert (step.status, step.at_ms) == (Status.SENT, T0 + 1)  # shown at the delivery's time at the latest
    assert planner.plan().moves == ()


async def test_an_inbox_change_answers_what_it_changes_and_records_the_reads() -> None:
    a, b, c = NIDS
    planner = Planner(
        [key_state(a, Status.SENT, channel="web"), key_state(b, Status.SENT, channel="web", user="u2")],
        [InboxState("u1", a, False, False), InboxState("u1", c, True, False)],
        [UnreadThrough("u1", None, (a,), c)],
    )
    assert planner.change_inbox(InboxChange("u1", InboxAction.READ, T0 + 1, ids=(a, b, c, a))).ids == (a,)
    # the read-all listed `a` unread when it was read for the batch: the read before it in the batch counts
    assert planner.change_inbox(InboxChange("u1", InboxAction.READ_ALL, T0 + 2)) == InboxChanged((), c)
    assert planner.change_inbox(InboxChange("u1", InboxAction.ARCHIVE, T0 + 3, ids=(c,))).ids == (c,)
    plan = planner.plan()
    assert [(t.notification_id, t.field.value, t.at_ms) for t in plan.inbox_times] == [(a, "read", T0 + 1), (c, "archived", T0 + 3)]
    [move] = plan.moves
    assert (move.notification_id, move.status, move.detail) == (a, Status.READ, READ_DETAIL)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(writes, min_size=1, max_size=10), cuts=st.sets(st.integers(1, 9)))
async def test_a_group_planned_in_slices_plans_what_one_go_plans(sequence: list[Write], cuts: set[int]) -> None:
    """The Recorder plans a large group PLAN_SLICE keys and EVENT_SLICE events at a time (issue 10 item 6): with
    slices of one, every group's plan and answers are those of the group planned in one go, from the same stored state."""
    store = ModelLogStore()
    for group in groups_of(sequence, cuts):
        whole = await plan_writes(store, group)
        saved = recorder_module.PLAN_SLICE, recorder_module.EVENT_SLICE
        recorder_module.PLAN_SLICE = recorder_module.EVENT_SLICE = 1
        try:
            sliced = await plan_writes(store, group)
        finally:
            recorder_module.PLAN_SLICE, recorder_module.EVENT_SLICE = saved
        assert sliced == whole
        await store.apply(whole[0])


async def test_a_large_group_is_planned_with_the_loop_free_between_slices() -> None:
    """2,000 fresh keys (a 1,000-item batch on two channels): other tasks run between the planner's slices, where
    the whole group was planned in one step of the loop."""
    events = tuple(
        StatusEvent(make_notification_id(T0, i), "u1", channel, Status.ACCEPTED, T0, created_ms=T0)
        for i in range(1000) for channel in (Channel.WEB, Channel.SMS)
    )
    ticks = 0

    async def probe() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.lowlevel.checkpoint()
        before = ticks
        plan, _ = await plan_writes(ModelLogStore(), [RecordEvents(events, fresh=True)])
        nursery.cancel_scope.cancel()
    assert len(plan.moves) == 2000
    assert ticks - before >= 2000 // recorder_module.PLAN_SLICE - 2
