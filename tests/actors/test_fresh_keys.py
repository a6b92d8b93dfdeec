"""The Recorder's fast path for fresh keys (RecordEvents.fresh, Planner.record's `fresh`, WritePlan.fresh), property-tested.

The Ingress marks its `accepted` + `queued` (or `failed`, `scheduled`) events fresh: their
notification ids are new, so the Recorder reads no stored state for the keys they name first
and plans them directly (write_planner._plan_fresh). "Fresh" is only a hint: an Idempotency-Key's
retry or a topic send's copy expanded again names ids that may be stored already. So a plan
names its fresh keys and a backend applies nothing of it if one is stored (NotFresh); the
Recorder then reads every key and plans again. Checked on random writes (fresh messages of the
Ingress's shapes and of any shape, some naming ids stored already; later events of any kind;
inbox entries and changes), in random batches:

- the fast path decides nothing: the same writes with and without the fresh hint leave the same
  statuses, timelines, histories, counters and inboxes, and answer the same, on the embedded
  backend and on the model of a backend without transactions;
- group by group, a plan whose fresh keys are all unstored is the plan the general path makes
  (operation for operation), and one with a stored fresh key is refused whole (NotFresh, the
  store untouched);
- a fast plan cut by a crash part-way (the model: no transactions), the group written again
  through the Recorder's path, ends where the general path's recovery from the same crash does.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.domain.write_planner import Planner
from actors.messages import RecordEvents
from actors.recorder import Write, _write_group, plan_writes, split_batch, write_batch
from protocol.channels import Channel, Priority
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from protocol.write_plan import WritePlan
from reactor.ports import NotFresh
from tests.actors.model_log_store import Crash, ModelLogStore
from tests.actors.test_write_planner import (
    HOUR, NIDS, OWNER, T0, assert_batches_write_as, batches, events, groups_of, writes,
)

pytestmark = pytest.mark.trio

# what the Ingress records after `accepted`: preferences' skip, send_at, quiet hours, the bus
SECOND = [(Status.QUEUED, ""), (Status.FAILED, "opted out of marketing"), (Status.SCHEDULED, "until 2024-01-02T00:00:00Z"),
          (Status.QUEUED, "quiet hours until 2024-01-01T07:00:00Z")]


@st.composite
def ingress_writes(draw: Any) -> RecordEvents:
    """A fresh RecordEvents: one notification's channels, each `accepted` then what the Ingress decided; now and then a
    channel with events of any shape (a wrong or odd hint: the direct planning must hand it to the general one)."""
    nid = draw(st.sampled_from(NIDS))
    user = OWNER[nid]
    at = T0 + draw(st.integers(0, 30)) * HOUR
    priority = draw(st.sampled_from(list(Priority)))
    template = draw(st.sampled_from(["", "welcome@1#A"]))
    accepted = draw(st.sampled_from(["", "topic:news"]))
    out: list[StatusEvent] = []
    for channel in draw(st.lists(st.sampled_from([Channel.EMAIL, Channel.WEB]), min_size=1, max_size=2, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            odd = draw(st.lists(events(), min_size=1, max_size=3))
            out += [msgspec.structs.replace(e, notification_id=nid, channel=channel, user_id=e.user_id if e.client else user)
                    for e in odd]
            continue
        status, detail = draw(st.sampled_from(SECOND))
        out += [
            StatusEvent(nid, user, channel, Status.ACCEPTED, at, detail=accepted, created_ms=at, priority=priority, template=template),
            StatusEvent(nid, user, channel, status, at, detail=detail, created_ms=at, priority=priority, template=template),
        ]
    return RecordEvents(tuple(out), (), None, fresh=True)


mixed = st.one_of(ingress_writes(), ingress_writes(), writes)


def unhinted(sequence: list[Write]) -> list[Write]:
    """The same writes with no fresh hint: every key read, planned by the general path."""
    return [RecordEvents(w.events, w.inbox) if isinstance(w, RecordEvents) else w for w in sequence]


def same_operations(plan: WritePlan) -> WritePlan:
    return msgspec.structs.replace(plan, fresh=())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(mixed, min_size=1, max_size=10), cuts=st.sets(st.integers(1, 9)))
async def test_the_fresh_hint_changes_nothing_written(sequence: list[Write], cuts: set[int]) -> None:
    general = ModelLogStore()
    expected = []
    for batch in batches(unhinted(sequence), cuts):
        expected += await write_batch(general, batch)
    await assert_batches_write_as(general, expected, sequence, cuts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(mixed, min_size=1, max_size=10), cuts=st.sets(st.integers(1, 9)))
async def test_a_fast_plan_is_the_general_plan_or_is_refused_whole(sequence: list[Write], cuts: set[int]) -> None:
    store = ModelLogStore()
    for batch in batches(sequence, cuts):
        for group in split_batch(batch):
            writes_ = [batch[i] for i in group]
            fast, fast_answers = await plan_writes(store, writes_)
            general, general_answers = await plan_writes(store, writes_, fast=False)
            assert general.fresh == ()
            assert fast_answers == general_answers
            stored = [key for key in fast.fresh if key in store.status]
            if not stored:
                assert same_operations(fast) == general
            else:
                before = store.snapshot()
                with pytest.raises(NotFresh):
                    await store.apply(fast)
                assert store.snapshot() == before
            await store.apply(general)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.lists(mixed, min_size=1, max_size=8),
    cuts=st.sets(st.integers(1, 7)),
    crash_in=st.integers(0, 20),
    crash_after=st.integers(0, 40),
)
async def test_a_fast_plan_cut_by_a_crash_recovers_as_the_general_path_does(
    sequence: list[Write], cuts: set[int], crash_in: int, crash_after: int,
) -> None:
    groups = groups_of(sequence, cuts)
    crashed = crash_in % len(groups)
    recovered = []
    for fast in (True, False):
        store = ModelLogStore()
        for n, group in enumerate(groups):
            if n == crashed:  # the stores are alike so far (checked above): the same crash in both
                plan, _ = await plan_writes(store, group)
                if not any(key in store.status for key in plan.fresh) and crash_after < len(plan.operations()):
                    if not fast:
                        plan, _ = await plan_writes(store, group, fast=False)  # the same operations (checked above)
                    store.crash_after = crash_after
                    with pytest.raises(Crash):
                        await store.apply(plan)
            await _write_group(store, group) if fast else await store.apply((await plan_writes(store, group, fast=False))[0])
        recovered.append(store.snapshot())
    assert recovered[0] == recovered[1]


class CountingReads(ModelLogStore):
    """The model, counting the keys the Recorder reads."""

    def __init__(self) -> None:
        super().__init__()
        self.keys_read: list[tuple[str, str]] = []

    async def key_states(self, keys: Any, *, timeline: bool = False) -> Any:
        self.keys_read += keys
        return await super().key_states(keys, timeline=timeline)


def accepted_then(nid: str, status: Status, detail: str = "", at: int = T0) -> RecordEvents:
    user = OWNER[nid]
    return RecordEvents((
        StatusEvent(nid, user, Channel.EMAIL, Status.ACCEPTED, at, created_ms=at),
        StatusEvent(nid, user, Channel.EMAIL, status, at, detail=detail, created_ms=at),
    ), fresh=True)


async def test_fresh_keys_are_not_read_and_a_wrong_guess_is_planned_again_without_a_second_count() -> None:
    store = CountingReads()
    skipped = accepted_then(NIDS[0], Status.FAILED, "opted out")
    sent = RecordEvents((StatusEvent(NIDS[1], OWNER[NIDS[1]], Channel.EMAIL, Status.SENT, T0 + 5),))
    await write_batch(store, [skipped, accepted_then(NIDS[1], Status.QUEUED), sent])
    assert store.keys_read == []  # both fresh; the later event of the second, in the group, is planned on top of it
    assert store.counters == {("2024-01-01", "email", 0, "failed"): 1, ("2024-01-01", "email", 0, "sent"): 1}
    assert [store.status[(n, "email")].status for n in NIDS[:2]] == [Status.FAILED, Status.SENT]
    plan, _ = await plan_writes(store, [skipped])
    assert plan.fresh == ((NIDS[0], "email"),)
    # the Ingress's retry of the first (an Idempotency-Key's id): stored, so refused whole and planned again
    with pytest.raises(NotFresh):
        await store.apply(plan)
    before = store.snapshot()
    await write_batch(store, [skipped])
    assert set(store.keys_read) == {(NIDS[0], "email")}  # read (and its timeline: `accepted` is now a late step)
    assert store.snapshot() == before  # the failed count once, the status where it was


async def test_a_fresh_hint_on_a_stored_key_loses_no_event_the_plan_would_drop() -> None:
    """A client's ack marked fresh (no writer does so, but a hint is only a hint) of a key stored already: planned
    fresh it would be dropped (no row to move); the plan names the key anyway, is refused, and is planned again."""
    store = ModelLogStore()
    await write_batch(store, [accepted_then(NIDS[0], Status.QUEUED)])
    ack = StatusEvent(NIDS[0], OWNER[NIDS[0]], Channel.EMAIL, Status.DELIVERED, T0 + 1, client=True)
    plan, _ = await plan_writes(store, [RecordEvents((ack,), fresh=True)])
    assert (plan.moves, plan.fresh) == ((), ((NIDS[0], "email"),))
    await write_batch(store, [RecordEvents((ack,), fresh=True)])
    assert store.status[(NIDS[0], "email")].status is Status.DELIVERED


async def test_the_direct_planning_counts_a_skipped_channel_and_keeps_its_reason() -> None:
    planner = Planner()
    w = accepted_then(NIDS[0], Status.FAILED, "opted out")
    planner.record(w.events, fresh=True)
    assert planner.timelines_needed() == []
    plan = planner.plan()
    general = Planner()
    general.record(w.events)
    general.timelines_needed()
    assert same_operations(plan) == general.plan() and plan.fresh == ((NIDS[0], "email"),)
    [move] = plan.moves
    assert (move.status, move.error, move.create, len(plan.counts)) == (Status.FAILED, "opted out", True, 1)
