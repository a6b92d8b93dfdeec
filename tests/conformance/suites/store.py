"""The Store port's conformance checks (reactor/ports.py, Store): what a PostgreSQL must keep as the embedded one does.

What its callers rely on: the Scheduler (actors/scheduler.py) reloads every pending entry
at start and removes an entry only once fired; the consumer and the DLQ service
(actors/consumer.py, actors/services/dead_letters.py) keep one entry per (notification,
channel), page by id, and rely on a replacing entry getting a new id (a replay in flight
discards the ids it read, never the entry that replaced one); the Provider's send ledger
(actors/provider.py) is keyed by (notification, channel) and keeps the first status;
credentials.py keeps metadata put-if-absent and forgets it.

The Scheduler's claims (claim_due, next_due_ms): several nodes' Schedulers share the
store, each claiming due entries by lease; `h.open()` opens one more client of the same
store (a node's connection), so claimers on separate connections race. A leased entry
goes to no other owner until its lease ends, and the next due time counts leases.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import trio

from reactor.ports import DeadLetter, DigestEvent, DigestFire, DigestWindow, DlqFilter, FanoutJob, Scheduled
from tests.conformance.backends import Harness


def dead(nid: str, channel: str = "sms", *, dead_ms: int = 1000, error: str = "down", user: str = "u1") -> DeadLetter:
    return DeadLetter(0, channel, nid, user, error, 3, 500, dead_ms, f"record of {nid}/{channel}/{error}".encode())


def same_entry(a: DeadLetter, b: DeadLetter) -> bool:
    """Equal but for the id the store assigns."""
    return (a.channel, a.notification_id, a.user_id, a.error, a.attempts, a.created_ms, a.dead_ms, a.record) == (
        b.channel, b.notification_id, b.user_id, b.error, b.attempts, b.created_ms, b.dead_ms, b.record)


async def all_pages(store: Any, selection: DlqFilter, limit: int) -> list[list[DeadLetter]]:
    """Every page of a listing, following the ids as a cursor."""
    pages, after = [], 0
    while True:
        page = await store.dead_letters(selection, after, limit)
        if not page:
            return pages
        pages.append(page)
        assert len(page) <= limit, f"a page of {len(page)} entries with limit {limit}"
        assert page[0].id > after, f"the page after id {after} starts at id {page[0].id}"
        after = page[-1].id


async def check_meta_is_put_if_absent_and_forgettable(h: Harness[Any]) -> None:
    async with h.open() as store:
        assert await store.get_meta("node") is None
        assert await store.put_meta_if_absent("node", "first") == "first"
        assert await store.put_meta_if_absent("node", "second") == "first"
        assert await store.get_meta("node") == "first"
        await store.forget_meta("node")
        await store.forget_meta("never-put")
        assert await store.get_meta("node") is None
        assert await store.put_meta_if_absent("node", "third") == "third"


async def check_meta_put_if_absent_has_one_winner(h: Harness[Any]) -> None:
    got: list[str] = []
    async with h.open() as store:

        async def put(i: int) -> None:
            got.append(await store.put_meta_if_absent("race", f"v{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(put, i)
        assert len(set(got)) == 1, f"callers were told different values: {sorted(set(got))}"
        assert await store.get_meta("race") == got[0]


async def check_scheduled_entries_come_back_earliest_first(h: Harness[Any]) -> None:
    entries = [Scheduled(f"e{i}", due, "herald.sms", b"u%d" % i, b"value %d" % i) for i, due in enumerate([3000, 1000, 2000, 1500])]
    async with h.open() as store:
        assert await store.scheduled() == []
        for entry in entries:
            await store.schedule(entry)
        listed = await store.scheduled()
        assert sorted(listed, key=lambda e: e.id) == sorted(entries, key=lambda e: e.id)  # every field as scheduled
        assert [e.due_ms for e in listed] == sorted(e.due_ms for e in entries)


async def check_scheduling_an_id_again_replaces_its_entry(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.schedule(Scheduled("retry:n1:sms:2", 5000, "herald.sms", b"u1", b"old"))
        await store.schedule(Scheduled("retry:n1:sms:2", 7000, "herald.sms", b"u1", b"new"))
        await store.schedule(Scheduled("retry:n1:sms:2", 7000, "herald.sms", b"u1", b"new"))  # the same, again
        assert await store.scheduled() == [Scheduled("retry:n1:sms:2", 7000, "herald.sms", b"u1", b"new")]


async def check_unschedule_removes_only_those_ids(h: Harness[Any]) -> None:
    async with h.open() as store:
        for i in range(5):
            await store.schedule(Scheduled(f"e{i}", 1000 + i, "herald.email", b"k", b"v"))
        await store.unschedule(["e1", "e3", "unknown"])
        await store.unschedule([])
        assert [e.id for e in await store.scheduled()] == ["e0", "e2", "e4"]
        await store.unschedule(["e1"])  # again: nothing
        assert [e.id for e in await store.scheduled()] == ["e0", "e2", "e4"]


async def check_one_dead_letter_per_delivery_replaced_under_a_new_id(h: Harness[Any]) -> None:
    async with h.open() as store:
        first = await store.dead_letter(dead("n1", error="first"))
        other_channel = await store.dead_letter(dead("n1", "email"))
        second = await store.dead_letter(dead("n1", error="second"))
        assert second > max(first, other_channel), "a replacing entry gets a new id, after every id given before"
        assert await store.dead_letter_count() == 2
        [sms] = await store.dead_letters(DlqFilter(channel="sms"))
        assert sms.id == second and same_entry(sms, dead("n1", error="second"))
        # A replay that read the first entry and discards it must not discard its replacement.
        assert await store.discard_dead_letters([first]) == 0
        assert [e.id for e in await store.dead_letters(DlqFilter(channel="sms"))] == [second]


async def check_concurrent_dead_letterings_of_one_delivery_leave_one_entry(h: Harness[Any]) -> None:
    async with h.open() as store:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(store.dead_letter, dead("n1", error=f"e{i}"))
        assert await store.dead_letter_count("sms") == 1
        [entry] = await store.dead_letters(DlqFilter())
        assert entry.error in {f"e{i}" for i in range(10)}


async def check_dead_letters_are_listed_oldest_first_with_every_field(h: Harness[Any]) -> None:
    async with h.open() as store:
        wanted = [dead(f"n{i}", channel, dead_ms=1000 + i) for i in range(4) for channel in ("sms", "push")]
        ids = [await store.dead_letter(entry) for entry in wanted]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and min(ids) > 0, ids
        listed = await store.dead_letters(DlqFilter())
        assert [e.id for e in listed] == ids
        assert all(same_entry(got, entry) for got, entry in zip(listed, wanted))


async def check_dead_letter_filters(h: Harness[Any]) -> None:
    async with h.open() as store:
        ids = {}
        for i in range(6):
            for channel in ("sms", "email"):
                ids[(f"n{i}", channel)] = await store.dead_letter(dead(f"n{i}", channel, dead_ms=1000 * i))

        async def chosen(**criteria: Any) -> set[tuple[str, str]]:
            return {(e.notification_id, e.channel) for e in await store.dead_letters(DlqFilter(**criteria), 0, 100)}

        everything = set(ids)
        assert await chosen() == everything
        assert await chosen(channel="sms") == {k for k in everything if k[1] == "sms"}
        assert await chosen(notification_id="n2") == {("n2", "sms"), ("n2", "email")}
        assert await chosen(before_ms=2000) == {k for k in everything if k[0] in ("n0", "n1")}  # strictly before
        assert await chosen(ids=(ids[("n3", "sms")], ids[("n4", "email")])) == {("n3", "sms"), ("n4", "email")}
        assert await chosen(ids=()) == set()  # no id: nothing, not everything
        assert await chosen(channel="email", before_ms=3000, ids=(ids[("n1", "email")], ids[("n1", "sms")], ids[("n5", "email")])) == {
            ("n1", "email")}
        assert await chosen(channel="push") == set()
        assert await store.dead_letter_count() == 12
        assert await store.dead_letter_count("email") == 6
        assert await store.dead_letter_count("push") == 0


async def check_dead_letter_pages_follow_the_id_cursor_without_gap_or_repeat(h: Harness[Any]) -> None:
    async with h.open() as store:
        for i in range(7):
            await store.dead_letter(dead(f"n{i}"))
            await store.dead_letter(dead(f"n{i}", "push"))
        whole = await store.dead_letters(DlqFilter(), 0, 100)
        pages = await all_pages(store, DlqFilter(), 3)
        assert [len(p) for p in pages] == [3, 3, 3, 3, 2]
        assert [e.id for p in pages for e in p] == [e.id for e in whole]
        sms = await all_pages(store, DlqFilter(channel="sms"), 2)
        assert [e.notification_id for p in sms for e in p] == [f"n{i}" for i in range(7)]
        middle = whole[5].id
        assert [e.id for e in await store.dead_letters(DlqFilter(), middle, 2)] == [whole[6].id, whole[7].id]


async def check_resolving_deletes_the_channels_entries_of_those_notifications(h: Harness[Any]) -> None:
    async with h.open() as store:
        for nid in ("n1", "n2", "n3"):
            await store.dead_letter(dead(nid, "sms"))
            await store.dead_letter(dead(nid, "push"))
        assert await store.resolve_dead_letters("sms", []) == []
        resolved = await store.resolve_dead_letters("sms", ["n1", "n3", "n3", "n9"])
        assert sorted(resolved) == ["n1", "n3"]
        assert await store.resolve_dead_letters("sms", ["n1"]) == []  # already gone
        left = {(e.notification_id, e.channel) for e in await store.dead_letters(DlqFilter())}
        assert left == {("n2", "sms"), ("n1", "push"), ("n2", "push"), ("n3", "push")}


async def check_discard_counts_what_existed(h: Harness[Any]) -> None:
    async with h.open() as store:
        ids = [await store.dead_letter(dead(f"n{i}")) for i in range(4)]
        assert await store.discard_dead_letters([]) == 0
        assert await store.discard_dead_letters([ids[0], ids[2], 999_999]) == 2
        assert await store.discard_dead_letters([ids[0]]) == 0
        assert [e.id for e in await store.dead_letters(DlqFilter())] == [ids[1], ids[3]]


async def check_the_send_ledger_is_per_delivery_and_keeps_the_first_status(h: Harness[Any]) -> None:
    async with h.open() as store:
        assert await store.sent_status("n1", "sms") is None
        await store.mark_sent("n1", "sms", "delivered", 1000)
        await store.mark_sent("n1", "sms", "sent", 2000)  # a second send (the duplicate window): the first answer stays
        assert await store.sent_status("n1", "sms") == "delivered"
        assert await store.sent_status("n1", "email") is None
        assert await store.sent_status("n2", "sms") is None
        await store.mark_sent("n1", "email", "sent", 1000)
        assert (await store.sent_status("n1", "email"), await store.sent_status("n1", "sms")) == ("sent", "delivered")


async def check_concurrent_ledger_writes_are_each_there_once_acknowledged(h: Harness[Any]) -> None:
    """Many Provider attempts at once (a backend may batch their writes): each entry is there, durably, when its call returns."""
    count = 40
    seen: dict[int, str | None] = {}
    async with h.open() as store:

        async def send(i: int) -> None:
            await store.mark_sent(f"c{i}", "sms", "delivered", 1000 + i)
            seen[i] = await store.sent_status(f"c{i}", "sms")

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(send, i)
        assert [i for i in range(count) if seen[i] != "delivered"] == []
    async with h.open() as store:
        assert [i for i in range(count) if await store.sent_status(f"c{i}", "sms") != "delivered"] == []


async def check_a_batch_of_ledger_marks_is_there_once_acknowledged_and_keeps_the_first_status(h: Harness[Any]) -> None:
    """`mark_sent_many` (a Provider's batch): each mark as `mark_sent` makes it, all there when the call returns, and
    after a restart; a (notification, channel) marked before, or twice in the batch, keeps its first status."""
    async with h.open() as store:
        await store.mark_sent("b0", "sms", "delivered", 1000)
        await store.mark_sent_many([])
        await store.mark_sent_many([("b0", "sms", "sent", 2000), ("b1", "sms", "delivered", 2000), ("b2", "sms", "sent", 2000),
                                    ("b2", "sms", "delivered", 2001), ("b1", "push", "sent", 2000)])
        expected = {("b0", "sms"): "delivered", ("b1", "sms"): "delivered", ("b1", "push"): "sent", ("b2", "sms"): "sent",
                    ("b2", "push"): None, ("b3", "sms"): None}
        assert {key: await store.sent_status(*key) for key in expected} == expected
    async with h.open() as store:
        assert {key: await store.sent_status(*key) for key in expected} == expected


async def check_everything_is_still_there_after_a_restart(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.put_meta_if_absent("node", "n")
        await store.schedule(Scheduled("e1", 1000, "herald.sms", b"k", b"v"))
        dead_id = await store.dead_letter(dead("n1"))
        await store.mark_sent("n2", "push", "delivered", 1000)
    async with h.open() as store:
        assert await store.get_meta("node") == "n"
        assert await store.scheduled() == [Scheduled("e1", 1000, "herald.sms", b"k", b"v")]
        [entry] = await store.dead_letters(DlqFilter())
        assert entry.id == dead_id and same_entry(entry, dead("n1"))
        assert await store.sent_status("n2", "push") == "delivered"
        assert await store.dead_letter(dead("n3")) > dead_id  # ids keep growing across restarts


# -- the Scheduler's claims: due entries leased to one node at a time ---------------------

T0 = 1_800_000_000_000
LEASE = 30_000


def due_entry(name: str, due_ms: int) -> Scheduled:
    return Scheduled(name, due_ms, "herald.sms", b"user", f"value of {name}".encode())


def ids_of(entries: list[Scheduled]) -> list[str]:
    return [e.id for e in entries]


async def check_claims_only_due_entries_earliest_first_up_to_the_limit(h: Harness[Any]) -> None:
    async with h.open() as store:
        for name, due_ms in (("c", T0 + 30), ("a", T0 + 10), ("later", T0 + 5000), ("b", T0 + 20), ("d", T0 + 30)):
            await store.schedule(due_entry(name, due_ms))
        assert await store.next_due_ms() == T0 + 10
        assert await store.claim_due("n1", T0 + 5, 10, LEASE) == []  # nothing due yet
        first = await store.claim_due("n1", T0 + 100, 3, LEASE)
        assert ids_of(first) == ["a", "b", "c"]  # earliest due first (ties by id), at most the limit
        assert first[0] == due_entry("a", T0 + 10)  # the entry as scheduled, every field
        assert ids_of(await store.claim_due("n2", T0 + 100, 10, LEASE)) == ["d"]  # "later" is not due
        # a claim removes nothing
        assert sorted(ids_of(await store.scheduled())) == ["a", "b", "c", "d", "later"]
        await store.unschedule(["a", "b", "c", "d"])
        assert ids_of(await store.scheduled()) == ["later"]
        assert await store.next_due_ms() == T0 + 5000


async def check_a_leased_entry_goes_to_no_other_owner_until_the_lease_ends(h: Harness[Any]) -> None:
    async with h.open() as one, h.open() as other:
        await one.schedule(due_entry("x", T0))
        assert ids_of(await one.claim_due("n1", T0, 10, LEASE)) == ["x"]
        assert await other.claim_due("n2", T0 + 1, 10, LEASE) == []
        assert await other.claim_due("n2", T0 + LEASE - 1, 10, LEASE) == []  # the lease still runs
        assert ids_of(await one.claim_due("n1", T0 + 5, 10, LEASE)) == ["x"]  # its owner takes it back (a restart in place)
        assert await other.claim_due("n2", T0 + 5 + LEASE - 1, 10, LEASE) == []  # ... which renewed the lease
        assert ids_of(await other.claim_due("n2", T0 + 5 + LEASE, 10, LEASE)) == ["x"]  # ended: claimable again
        assert await one.claim_due("n1", T0 + 5 + LEASE + 1, 10, LEASE) == []  # now n2's
        await other.unschedule(["x"])
        assert await one.claim_due("n1", T0 + 10 * LEASE, 10, LEASE) == []
        assert await one.next_due_ms() is None


async def check_next_due_counts_the_end_of_a_lease(h: Harness[Any]) -> None:
    async with h.open() as store:
        assert await store.next_due_ms() is None
        await store.schedule(due_entry("x", T0))
        await store.schedule(due_entry("y", T0 + LEASE * 3))
        assert await store.next_due_ms() == T0
        assert ids_of(await store.claim_due("n1", T0 + 7, 1, LEASE)) == ["x"]
        assert await store.next_due_ms() == T0 + 7 + LEASE  # x is claimable again when its lease ends
        await store.unschedule(["x"])
        assert await store.next_due_ms() == T0 + LEASE * 3


async def check_scheduling_an_id_again_replaces_the_entry_and_its_lease(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.schedule(due_entry("x", T0))
        assert ids_of(await store.claim_due("n1", T0, 10, LEASE)) == ["x"]
        replaced = Scheduled("x", T0 + 50, "herald.sms", b"user", b"the new value")
        await store.schedule(replaced)
        assert await store.next_due_ms() == T0 + 50
        assert await store.claim_due("n2", T0 + 50, 10, LEASE) == [replaced]


async def check_concurrent_claimers_never_get_one_entry_twice(h: Harness[Any]) -> None:
    count = 120
    async with h.open() as one, h.open() as other:
        for i in range(count):
            await one.schedule(due_entry(f"e{i:03}", T0 + i % 17))
        got: Counter[str] = Counter()

        async def claimer(store: Any, owner: str) -> None:
            while batch := await store.claim_due(owner, T0 + 100, 7, LEASE):  # as a Scheduler: claim, produce, remove
                assert max((got[i] for i in ids_of(batch)), default=0) < 4, "an entry keeps coming back after it was removed"
                got.update(ids_of(batch))
                await trio.lowlevel.checkpoint()
                await store.unschedule(ids_of(batch))

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(claimer, one, f"one-{n}")
                nursery.start_soon(claimer, other, f"other-{n}")
        assert sum(got.values()) == count and len(got) == count, [i for i, n in got.items() if n > 1][:5]


# -- cancellation (DELETE /v1/notifications/{id}): a cancel and a fire exclude each other


def held_ids(nid: str, channel: str) -> list[str]:
    """The id prefixes the Canceller names (actors/services/cancellation.py)."""
    return [f"send:{nid}:{channel}", f"quiet:{nid}:{channel}", f"retry:{nid}:{channel}:"]


async def check_a_cancel_removes_unclaimed_entries_and_never_a_claimed_one(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.schedule(due_entry("send:n1:email", T0 + 1000))
        await store.schedule(due_entry("quiet:n1:email:99", T0 + 1000))  # a hold the consumer made again
        await store.schedule(due_entry("send:n11:email", T0 + 1000))  # another notification whose id starts alike
        await store.schedule(due_entry("quiet:n2:sms", T0))
        assert ids_of(await store.claim_due("n1", T0, 10, LEASE)) == ["quiet:n2:sms"]
        assert await store.cancel_scheduled("n1", "email", held_ids("n1", "email"), T0 + 1) is True
        assert sorted(ids_of(await store.scheduled())) == ["quiet:n2:sms", "send:n11:email"]
        assert await store.sent_status("n1", "email") == "cancelled"
        assert await store.cancel_scheduled("n1", "email", held_ids("n1", "email"), T0 + 2) is True  # a repeat says so again
        # claimed: being produced; the cancel removes nothing, before and after the lease ends (the claimer may have produced it)
        assert await store.cancel_scheduled("n2", "sms", held_ids("n2", "sms"), T0 + 3) is False
        assert await store.cancel_scheduled("n2", "sms", held_ids("n2", "sms"), T0 + LEASE + 1) is False
        assert "quiet:n2:sms" in ids_of(await store.scheduled())
        assert await store.sent_status("n2", "sms") is None
        # nothing held (on the bus already): not cancelled, nothing marked
        assert await store.cancel_scheduled("n3", "web", held_ids("n3", "web"), T0) is False
        assert await store.sent_status("n3", "web") is None
        # sent: never cancelled, its entry (a stale retry) left to the Scheduler and the ledger
        await store.mark_sent("n4", "sms", "delivered", T0)
        await store.schedule(due_entry("retry:n4:sms:2", T0 + 10))
        assert await store.cancel_scheduled("n4", "sms", held_ids("n4", "sms"), T0) is False
        assert await store.sent_status("n4", "sms") == "delivered"
        assert await store.claim_due("n1", T0 + 2000, 10, LEASE) != [] and await store.next_due_ms() is not None
        assert "send:n1:email" not in ids_of(await store.scheduled())


async def check_cancels_racing_claims_end_each_entry_cancelled_or_claimed_never_both(h: Harness[Any]) -> None:
    count = 60
    async with h.open() as one, h.open() as other:
        for i in range(count):
            await one.schedule(due_entry(f"send:n{i:03}:sms", T0 + i % 7))
        claimed: Counter[str] = Counter()
        cancelled: list[str] = []

        async def claimer(owner: str) -> None:
            while batch := await one.claim_due(owner, T0 + 100, 3, LEASE):
                assert max((claimed[i] for i in ids_of(batch)), default=0) < 4, "an entry keeps coming back after it was removed"
                claimed.update(ids_of(batch))
                await trio.lowlevel.checkpoint()
                await one.unschedule(ids_of(batch))

        async def canceller() -> None:
            for i in reversed(range(count)):
                nid = f"n{i:03}"
                if await other.cancel_scheduled(nid, "sms", held_ids(nid, "sms"), T0 + 100):
                    cancelled.append(f"send:{nid}:sms")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(claimer, "c1")
            nursery.start_soon(claimer, "c2")
            nursery.start_soon(canceller)
        assert not set(claimed) & set(cancelled), "cancelled and claimed (produced) both"
        assert len(set(claimed) | set(cancelled)) == count, "neither cancelled nor claimed"
        assert max(claimed.values(), default=1) == 1 and await one.scheduled() == []


# -- topics: subscriptions (paged by user id) and the fan-out jobs of topic sends (actors/fanout.py)


async def all_subscribers(store: Any, topic: str, limit: int) -> list[str]:
    """Every page of a topic's subscribers, following the last id as the cursor."""
    got: list[str] = []
    after = ""
    while page := await store.subscribers(topic, after, limit):
        assert len(page) <= limit, f"a page of {len(page)} with limit {limit}"
        assert page == sorted(page) and page[0] > after, f"the page after {after!r} is not in user id order above it: {page[:3]}"
        got += page
        after = page[-1]
    return got


async def check_subscribers_page_by_user_id_each_once(h: Harness[Any]) -> None:
    users = [f"u{i:03d}" for i in range(23)]
    async with h.open() as store:
        assert await store.add_subscribers("news", list(reversed(users))) == 23
        assert await store.add_subscribers("news", ["u000", "u000", "new"]) == 1  # repeats count once; only `new` is new
        await store.add_subscribers("other", ["u001", "zz"])
        assert await store.subscriber_count("news") == 24
        for limit in (1, 5, 23, 24, 100):  # boundaries on, before and after the last row
            assert await all_subscribers(store, "news", limit) == sorted([*users, "new"]), f"paging by {limit}"
        assert await all_subscribers(store, "nobody", 10) == []


async def check_unsubscribe_removes_exactly_those_users(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_subscribers("t", ["a", "b", "c", "d"])
        await store.add_subscribers("t2", ["a", "b"])
        assert await store.remove_subscribers("t", ["b", "never", "d", "b"]) == 2
        assert await store.remove_subscribers("t", ["b"]) == 0
        assert await all_subscribers(store, "t", 10) == ["a", "c"]
        assert await all_subscribers(store, "t2", 10) == ["a", "b"], "another topic's subscriptions stay"
        assert await store.subscriber_count("t") == 2


async def check_a_subscriber_added_behind_the_cursor_does_not_shift_the_pages(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_subscribers("t", [f"u{i}" for i in range(10)])
        first = await store.subscribers("t", "", 4)
        await store.add_subscribers("t", ["a-before-all"])  # sorts before the cursor: a fan-out under way skips it
        await store.remove_subscribers("t", [first[0]])
        rest: list[str] = []
        after = first[-1]
        while page := await store.subscribers("t", after, 4):
            rest += page
            after = page[-1]
        assert first + rest == [f"u{i}" for i in range(10)], "every subscriber after the cursor comes once, none before it"


def job(job_id: str, created_ms: int, topic: str = "news") -> FanoutJob:
    return FanoutJob(job_id, topic, b'{"topic": "%s"}' % topic.encode(), created_ms, 7)


async def check_fanout_jobs_are_claimed_oldest_first_by_one_owner_at_a_time(h: Harness[Any]) -> None:
    async with h.open() as one, h.open() as other:
        await one.add_fanout(job("j2", T0 + 2))
        await one.add_fanout(job("j1", T0 + 1))
        await one.add_fanout(FanoutJob("j1", "changed", b"{}", T0 + 9, 99))  # a second add keeps the first
        assert await other.fanout("j1") == job("j1", T0 + 1)
        claimed = await one.claim_fanout("n1", T0, LEASE)
        assert claimed == job("j1", T0 + 1)
        second = await other.claim_fanout("n2", T0 + 1, LEASE)
        assert second is not None and second.id == "j2", "a leased job goes to no other owner: the next one does"
        assert await other.claim_fanout("n3", T0 + LEASE - 1, LEASE) is None
        again = await one.claim_fanout("n1", T0 + 5, LEASE)
        assert again is not None and again.id == "j1", "its owner takes it back (a restart in place)"
        taken = await other.claim_fanout("n3", T0 + 5 + LEASE, LEASE)
        assert taken is not None and taken.id == "j1", "claimable again once the lease ended"


async def check_a_checkpoint_is_kept_only_for_the_jobs_owner(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_fanout(job("j", T0))
        claimed = await store.claim_fanout("n1", T0, LEASE)
        assert claimed is not None
        step = replace(claimed, cursor="u042", expanded=43, counts=b'{"sms":{"queued":43}}')
        assert await store.checkpoint_fanout("n1", step, T0 + 10, LEASE)
        assert await store.fanout("j") == step
        assert await store.claim_fanout("n2", T0 + 10 + LEASE - 1, LEASE) is None, "a checkpoint renews the lease"
        taken = await store.claim_fanout("n2", T0 + 10 + LEASE, LEASE)
        assert taken == step, "a new owner resumes from the last checkpoint"
        assert not await store.checkpoint_fanout("n1", replace(step, cursor="u099", expanded=100), T0 + 20 + LEASE, LEASE), (
            "the old owner's checkpoint after a takeover is refused"
        )
        assert await store.fanout("j") == step
        done = replace(step, cursor="u099", expanded=100, done_ms=T0 + 30 + LEASE)
        assert await store.checkpoint_fanout("n2", done, T0 + 30 + LEASE, LEASE)
        assert await store.fanout("j") == done
        assert await store.claim_fanout("n2", T0 + 100 * LEASE, LEASE) is None, "a finished job is never claimed"


# -- digests: events collected per (user, key) into windows, fired by lease (actors/digester.py) ------------------


MAX = 1000  # events per window before it is due at once (the Digester's MAX_EVENTS)


def event(nid: str, at_ms: int, user: str = "u1", key: str = "comments") -> DigestEvent:
    return DigestEvent(nid, user, key, at_ms, b'{"n": "%s"}' % nid.encode())


def nids_of(fire: DigestFire) -> list[str]:
    return [e.notification_id for e in fire.events]


async def check_digest_events_collect_into_one_window_per_user_and_key(h: Harness[Any]) -> None:
    """The sliding rule (the domain's `merge`): due = min(each event's due, the opening event's deadline)."""
    async with h.open() as store:
        await store.add_digest_event(event("e1", T0), T0 + 600, T0 + 3600, MAX)
        await store.add_digest_event(event("e2", T0 + 100), T0 + 700, T0 + 9999, MAX)  # the opening deadline stays
        await store.add_digest_event(event("e2", T0 + 100), T0 + 700, T0 + 9999, MAX)  # a repeat adds nothing
        await store.add_digest_event(event("x1", T0 + 5, user="u2"), T0 + 50, T0 + 50, MAX)
        await store.add_digest_event(event("y1", T0 + 5, key="likes"), T0 + 5000, T0 + 5000, MAX)
        [comments, likes] = await store.digest_windows("u1")
        assert comments == DigestWindow("u1", "comments", "", T0 + 700, T0 + 3600, 2, T0, T0 + 100)
        assert likes == DigestWindow("u1", "likes", "", T0 + 5000, T0 + 5000, 1, T0 + 5, T0 + 5)
        await store.add_digest_event(event("e3", T0 + 200), T0 + 4000, T0 + 4000, MAX)  # due past the deadline: the deadline
        [comments, _] = await store.digest_windows("u1")
        assert (comments.due_ms, comments.count, comments.last_ms) == (T0 + 3600, 3, T0 + 200)
        assert await store.next_digest_ms() == T0 + 50


async def check_a_due_window_is_claimed_once_closed_and_a_later_event_opens_the_next(h: Harness[Any]) -> None:
    async with h.open() as one, h.open() as other:
        for i in range(3):
            await one.add_digest_event(event(f"e{i}", T0 + 10 * i), T0 + 100, T0 + 100, MAX)
        assert await one.claim_digests("n1", T0 + 99, 10, LEASE) == [], "not due yet"
        [fire] = await one.claim_digests("n1", T0 + 100, 10, LEASE)
        assert nids_of(fire) == ["e0", "e1", "e2"] and fire.window.fire_id == "e0" and fire.window.count == 3
        assert await other.claim_digests("n2", T0 + 100 + LEASE - 1, 10, LEASE) == [], "leased: to no other owner"
        await other.add_digest_event(event("e3", T0 + 150), T0 + 500, T0 + 500, MAX)  # the window is closed: a new one opens
        windows = await other.digest_windows("u1")
        assert sorted((w.fire_id, w.count) for w in windows) == [("", 1), ("e0", 3)]
        assert await other.next_digest_ms() == T0 + 500
        [again] = await other.claim_digests("n2", T0 + 100 + LEASE, 1, LEASE)
        assert again == fire, "once the lease ended: the same window, the same events, the same fire id"
        await other.finish_digest("e0")
        await other.finish_digest("e0")  # a repeat: nothing
        [(window)] = await one.digest_windows("u1")
        assert window.fire_id == "" and window.count == 1
        [nxt] = await one.claim_digests("n1", T0 + 500, 10, LEASE)
        assert nids_of(nxt) == ["e3"]
        await one.finish_digest(nxt.window.fire_id)
        assert await one.digest_windows("u1") == [] and await one.next_digest_ms() is None


async def check_concurrent_digest_claimers_and_adders_put_every_event_in_exactly_one_fire(h: Harness[Any]) -> None:
    count = 60
    async with h.open() as one, h.open() as other, h.open() as third:
        fired: list[str] = []
        adding = True

        async def adder() -> None:
            nonlocal adding
            for i in range(count):
                await one.add_digest_event(event(f"e{i:03}", T0 + i, user=f"u{i % 3}"), T0, T0, MAX)
                await trio.lowlevel.checkpoint()
            adding = False

        async def claimer(store: Any, owner: str) -> None:
            idle = 0  # rounds after the last add in which a window was due and no claim took one
            while adding or await store.next_digest_ms() is not None:
                fires = await store.claim_digests(owner, T0 + 1000, 2, LEASE)
                for fire in fires:
                    assert len(fired) < 2 * count, "events keep being fired again"
                    fired.extend(nids_of(fire))
                    await store.finish_digest(fire.window.fire_id)
                idle = 0 if fires or adding else idle + 1
                assert idle < 1000, "a window stays due and no claim takes it"
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(adder)
            nursery.start_soon(claimer, other, "c1")
            nursery.start_soon(claimer, third, "c2")
        assert sorted(fired) == [f"e{i:03}" for i in range(count)], "each event fired exactly once"


async def check_a_cancel_takes_an_event_out_of_an_open_window_and_never_out_of_a_claimed_one(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_digest_event(event("e1", T0), T0 + 100, T0 + 100, MAX)
        await store.add_digest_event(event("e2", T0 + 1), T0 + 100, T0 + 100, MAX)
        assert await store.cancel_digest_event("e1", ["email", "web"], T0 + 5)
        assert await store.cancel_digest_event("e1", ["email", "web"], T0 + 6), "a repeat answers the same"
        assert await store.sent_status("e1", "web") == "cancelled"
        [window] = await store.digest_windows("u1")
        assert window.count == 1
        [fire] = await store.claim_digests("n1", T0 + 100, 10, LEASE)
        assert nids_of(fire) == ["e2"]
        assert not await store.cancel_digest_event("e2", ["email"], T0 + 101), "claimed: the digest carries it"
        assert await store.sent_status("e2", "email") is None
        assert not await store.cancel_digest_event("nope", ["email"], T0 + 101)
        await store.add_digest_event(event("e3", T0 + 200), T0 + 300, T0 + 300, MAX)
        assert await store.cancel_digest_event("e3", ["email"], T0 + 201)
        assert [w.fire_id for w in await store.digest_windows("u1")] == ["e2"], "an emptied open window is gone"


async def check_cancels_racing_digest_claims_end_each_event_cancelled_or_fired_never_both(h: Harness[Any]) -> None:
    count = 60
    async with h.open() as one, h.open() as other:
        for i in range(count):
            await one.add_digest_event(event(f"e{i:03}", T0, user=f"u{i % 20}"), T0 + i % 7, T0 + 50, MAX)
        fired: Counter[str] = Counter()
        cancelled: list[str] = []
        finished: set[str] = set()

        async def claimer(owner: str) -> None:
            while batch := await one.claim_digests(owner, T0 + 100, 2, LEASE):
                for fire in batch:
                    # a finished fire that comes back would be claimed again forever: fail, do not spin
                    assert fire.window.fire_id not in finished, f"the finished digest {fire.window.fire_id} was claimed again"
                    finished.add(fire.window.fire_id)
                    fired.update(nids_of(fire))
                    await trio.lowlevel.checkpoint()
                    await one.finish_digest(fire.window.fire_id)

        async def canceller() -> None:
            for i in reversed(range(count)):
                if await other.cancel_digest_event(f"e{i:03}", ["sms"], T0 + 100):
                    cancelled.append(f"e{i:03}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(claimer, "c1")
            nursery.start_soon(claimer, "c2")
            nursery.start_soon(canceller)
        assert not set(fired) & set(cancelled), "cancelled and fired both"
        assert len(set(fired) | set(cancelled)) == count, "neither cancelled nor fired"
        assert max(fired.values(), default=1) == 1


async def check_digests_are_still_there_after_a_restart(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_digest_event(event("e1", T0), T0 + 100, T0 + 100, MAX)
        await store.add_digest_event(event("e2", T0 + 1, key="likes"), T0 + 100, T0 + 100, MAX)
        await store.claim_digests("n1", T0 + 100, 1, LEASE)
    async with h.open() as store:
        windows = await store.digest_windows("u1")
        assert sorted((w.digest_key, w.fire_id) for w in windows) == [("comments", "e1"), ("likes", "")]
        fires = await store.claim_digests("n1", T0 + 100, 10, LEASE)  # its owner, restarted in place, takes its own back
        assert sorted(n for f in fires for n in nids_of(f)) == ["e1", "e2"]
        assert [f.events[0].body for f in fires if f.window.digest_key == "comments"] == [b'{"n": "e1"}']


async def check_a_full_digest_window_is_due_at_once(h: Harness[Any]) -> None:
    async with h.open() as store:
        for i in range(4):
            await store.add_digest_event(event(f"e{i}", T0 + i), T0 + 3600, T0 + 3600, 5)
        [window] = await store.digest_windows("u1")
        assert window.due_ms == T0 + 3600, "under max_events: its own time"
        await store.add_digest_event(event("e4", T0 + 4), T0 + 3600, T0 + 3600, 5)
        [window] = await store.digest_windows("u1")
        assert (window.count, window.due_ms) == (5, T0 + 4), "the fifth event fills it: due at once"
