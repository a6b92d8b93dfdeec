"""The in-memory ports of `herald simulate` (reactor/backends/memory): what the delivery path relies on of each."""

from __future__ import annotations

import pytest
import trio

from protocol.lifecycle import Status
from protocol.write_plan import MoveStatus, WritePlan
from reactor.backends.memory import MemoryBus, MemoryLogStore, MemoryStore, NotServed
from reactor.ports import DeadLetter, DlqFilter, Scheduled


async def test_the_bus_fetch_waits_for_a_record_and_commits_drop_what_every_group_passed(autojump_clock):
    bus = MemoryBus({"t": 1})
    got = []

    async def fetch() -> None:
        got.extend(await bus.fetch("g", "t", 0, 0, 10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        await trio.sleep(1)
        assert got == []  # nothing yet: it waits
        assert await bus.produce([("t", b"k", b"v0")]) == [(0, 0)]
    assert [r.value for r in got] == [b"v0"]
    await bus.produce([("t", b"k", f"v{n}".encode()) for n in range(1, 6000)])
    await bus.commit("other", "t", 0, 100)
    await bus.commit("g", "t", 0, 5000)
    assert bus.held() == 6000  # the other group has not passed them (as the embedded bus: groups that committed count)
    await bus.commit("other", "t", 0, 5500)
    assert bus.held() == 1000
    assert [r.offset for r in await bus.fetch("g", "t", 0, 0, 2)] == [5000, 5001]  # below the start: from the start
    assert await bus.committed("g", "t", 0) == 5000 and await bus.end_offset("t", 0) == 6000
    with pytest.raises(ValueError):
        await bus.commit("g", "t", 0, 6001)
    stream = bus.assignments("g", ["t"])
    first = await stream.__anext__()
    assert first.assigned == frozenset({("t", 0)}) and not first.revoked
    await stream.aclose()


async def test_the_store_claims_due_entries_once_until_their_lease_ends(autojump_clock):
    store = MemoryStore()
    for n, due in enumerate([300, 100, 200]):
        await store.schedule(Scheduled(f"e{n}", due, "t", b"k", b"v"))
    assert await store.next_due_ms() == 100
    assert [e.id for e in await store.claim_due("a", 250, 10, 1000)] == ["e1", "e2"]
    assert await store.claim_due("a", 260, 10, 1000) == []  # leased
    assert await store.next_due_ms() == 300
    await store.unschedule(["e1"])
    assert [e.id for e in await store.claim_due("a", 1300, 10, 1000)] == ["e0", "e2"]  # e2's lease ended; e1 is gone
    await store.unschedule(["e0", "e2"])
    assert await store.next_due_ms() is None and await store.scheduled() == []


async def test_the_store_keeps_one_dead_letter_per_delivery_and_a_bounded_ledger(autojump_clock):
    store = MemoryStore(ledger_keep_ms=1000)
    for attempts in (3, 5):
        await store.dead_letter(DeadLetter(0, "sms", "n1", "u", "down", attempts, 0, 10, b""))
    [only] = await store.dead_letters(DlqFilter(channel="sms"))
    assert only.attempts == 5 and await store.dead_letter_count() == 1
    assert await store.resolve_dead_letters("sms", ["n1", "n2"]) == ["n1"]
    assert await store.dead_letter_count("sms") == 0
    await store.mark_sent("n1", "sms", "delivered", 0)
    await store.mark_sent("n1", "sms", "sent", 10)  # the first answer stays
    assert await store.sent_status("n1", "sms") == "delivered"
    await store.mark_sent("n2", "sms", "delivered", 5000)  # an hour later in the scale of the keep: n1 is forgotten
    assert await store.sent_status("n1", "sms") is None and await store.sent_status("n2", "sms") == "delivered"
    with pytest.raises(NotServed):
        await store.subscribers("topic", "", 10)


def _move(nid: str, status: Status, step: int, at: int, after: frozenset[int] = frozenset(), create: bool = False) -> MoveStatus:
    return MoveStatus(nid, "sms", "u", "normal", 0, status, step, at, "", after, create)


async def test_the_log_store_moves_statuses_under_their_guard_and_forgets_old_rows(autojump_clock):
    logs = MemoryLogStore(keep_ms=1000)
    await logs.apply(WritePlan(moves=(_move("n1", Status.ACCEPTED, 1, 0, create=True),)))
    await logs.apply(WritePlan(moves=(_move("n1", Status.SENT, 3, 10, after=frozenset({9})),)))  # not from step 1
    [state] = await logs.key_states([("n1", "sms")])
    assert state.status is Status.ACCEPTED
    await logs.apply(WritePlan(moves=(_move("n1", Status.SENT, 3, 20, after=frozenset({1})),)))
    [state] = await logs.key_states([("n1", "sms")])
    assert state.status is Status.SENT
    await logs.apply(WritePlan(moves=(_move("n2", Status.ACCEPTED, 1, 5000, create=True),)))
    assert await logs.key_states([("n1", "sms")]) == [] and logs.held() == 1
