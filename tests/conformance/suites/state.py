"""The State port's conformance checks (reactor/ports.py, State): what a Redis must keep as the embedded one does.

TTLs and waits are counted in the harness's ticks: a second of MockClock time for a
backend on Trio's clock (an hour takes no time), a few hundredths of a real second for a
server with a clock of its own. Races are real races: N tasks call at once, and the
backend's own I/O decides the interleaving.

The Provider's gate (lease_tokens, breaker_*): leased tokens count against the bucket
until they come back or expire; a lease is given back once, and never after it expired;
lease ids are never reused; concurrent leases never hand out more than the bucket holds,
and an empty bucket reserves slices one after the other; the breaker opens on failures
from any owners, refuses while open, admits one probe across all owners, frees a dead
prober's slot when its lease ends, and counts a half-open outcome only from the probe's
holder. Their figures are exact on a virtual clock (the embedded States read Trio's). On a
real clock (Redis's TIME) the calls themselves take time, which refills the bucket and runs
down the waits: a `Watch` measures that time, and each figure is checked to lie within what
it allows (exactly the figure on a virtual clock); where a figure goes through floor(), the
check uses a slower rate on a real clock, so that a call's time stays far below a token.

Recent pushes (append_recent, recent): a list keeps its newest items, oldest first, byte
for byte, and expires its TTL after the last append; concurrent appends lose nothing.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from reactor.circuit_breaker import BreakerConfig
from reactor.ports import BreakerView, TokenLease
from tests.conformance.backends import Harness


async def next_message(subscription: Any, h: Harness[Any]) -> bytes:
    """The subscription's next message; fails (rather than hangs) if none comes."""
    with trio.move_on_after(h.ticks(100)):
        return bytes(await subscription.__anext__())
    raise AssertionError("no message came to a subscriber that should have had one")


async def check_get_set_delete(h: Harness[Any]) -> None:
    async with h.open() as state:
        assert await state.get("a") is None
        await state.set("a", b"x")
        await state.set("b", b"\x00\xff binary")
        assert (await state.get("a"), await state.get("b")) == (b"x", b"\x00\xff binary")
        await state.set("a", b"again")  # replaces
        assert await state.get("a") == b"again"
        await state.delete("a")
        await state.delete("never-set")  # nothing to delete: no error
        assert (await state.get("a"), await state.get("b")) == (None, b"\x00\xff binary")


async def check_ttl_expiry(h: Harness[Any]) -> None:
    async with h.open() as state:
        await state.set("short", b"s", ttl_s=h.ticks(10))
        await state.set("forever", b"f")
        assert await state.put_if_absent("lease", b"l", ttl_s=h.ticks(10)) is None
        assert (await state.get("short"), await state.get("lease")) == (b"s", b"l")
        if h.factory.clock == "virtual":  # exact time: not a moment early (a real clock only promises "after")
            await h.sleep(9)
            assert (await state.get("short"), await state.get("lease")) == (b"s", b"l")
        await h.sleep(12)
        assert (await state.get("short"), await state.get("lease"), await state.get("forever")) == (None, None, b"f")
        # An expired key is absent for put_if_absent too.
        assert await state.put_if_absent("lease", b"again", ttl_s=h.ticks(10)) is None
        assert await state.get("lease") == b"again"


async def check_set_replaces_the_ttl(h: Harness[Any]) -> None:
    async with h.open() as state:
        await state.set("k", b"1", ttl_s=h.ticks(10))
        await state.set("k", b"2")  # no TTL now
        await state.set("m", b"1")
        await state.set("m", b"2", ttl_s=h.ticks(10))  # a TTL now
        await h.sleep(12)
        assert (await state.get("k"), await state.get("m")) == (b"2", None)


async def check_put_if_absent_returns_what_is_there(h: Harness[Any]) -> None:
    async with h.open() as state:
        assert await state.put_if_absent("k", b"first", ttl_s=h.ticks(100)) is None
        assert await state.put_if_absent("k", b"second", ttl_s=h.ticks(100)) == b"first"
        assert await state.get("k") == b"first"
        await state.set("empty", b"")  # an empty value is a value: it is there
        assert await state.put_if_absent("empty", b"other", ttl_s=h.ticks(100)) == b""
        assert await state.get("empty") == b""


async def _race(state: Any, key: str, contenders: int, ttl_s: float) -> list[bytes | None]:
    """`contenders` tasks put_if_absent the same key at once; what each got back."""
    results: list[bytes | None] = [None] * contenders

    async def contend(i: int) -> None:
        results[i] = await state.put_if_absent(key, b"%d" % i, ttl_s=ttl_s)

    async with trio.open_nursery() as nursery:
        for i in range(contenders):
            nursery.start_soon(contend, i)
    return results


async def check_put_if_absent_has_one_winner_among_concurrent_callers(h: Harness[Any]) -> None:
    async with h.open() as state:
        for round_ in range(2):  # on a new key, then on the same key once it expired
            results = await _race(state, "race", 50, h.ticks(10))
            winners = [i for i, got in enumerate(results) if got is None]
            assert len(winners) == 1, f"round {round_}: {len(winners)} callers stored the key"
            value = b"%d" % winners[0]
            assert all(got == value for got in results if got is not None), "a loser was told another value than the one stored"
            assert await state.get("race") == value
            await h.sleep(12)


async def check_take_tokens_gives_the_burst_then_the_wait(h: Harness[Any]) -> None:
    rate = 0.1 / h.ticks(1)  # a token every 10 ticks
    async with h.open() as state:
        granted = [await state.take_tokens("bucket", 1, capacity=10, refill_per_s=rate) == 0.0 for _ in range(15)]
        assert granted == [True] * 10 + [False] * 5, granted
        wait = await state.take_tokens("bucket", 1, capacity=10, refill_per_s=rate)
        assert 0 < wait <= h.ticks(10) * (1 + 1e-9), wait
        if h.factory.clock == "virtual":
            assert abs(wait - h.ticks(10)) < 1e-6, wait
        await trio.sleep(wait)
        assert await state.take_tokens("bucket", 1, capacity=10, refill_per_s=rate) == 0.0  # the wait was enough
        assert await state.take_tokens("bucket", 1, capacity=10, refill_per_s=rate) > 0


async def check_take_tokens_buckets_are_apart_and_take_n(h: Harness[Any]) -> None:
    rate = 0.1 / h.ticks(1)
    async with h.open() as state:
        assert await state.take_tokens("a", 4, capacity=5, refill_per_s=rate) == 0.0
        assert await state.take_tokens("a", 4, capacity=5, refill_per_s=rate) > 0  # 1 left: not 4
        assert await state.take_tokens("b", 5, capacity=5, refill_per_s=rate) == 0.0  # another bucket: full
        assert await state.take_tokens("a", 1, capacity=5, refill_per_s=rate) == 0.0  # the one left


async def check_take_tokens_refill_stops_at_capacity(h: Harness[Any]) -> None:
    rate = 1.0 / h.ticks(1)
    async with h.open() as state:
        assert await state.take_tokens("idle", 5, capacity=5, refill_per_s=rate) == 0.0
        # a long idle time refills the bucket, to its capacity and no further (a real clock: 8 times the time to fill it)
        await h.sleep(1000 if h.factory.clock == "virtual" else 40)
        granted = [await state.take_tokens("idle", 1, capacity=5, refill_per_s=rate) == 0.0 for _ in range(7)]
        assert granted[:5] == [True] * 5 and granted[-1] is False, granted


async def check_take_tokens_never_over_admits_concurrent_takers(h: Harness[Any]) -> None:
    """N takers on one bucket, each taking or waiting what it is told: admitted <= capacity + rate x elapsed."""
    capacity, rate = 5.0, 2.0 / h.ticks(1)
    admitted = 0
    async with h.open() as state:
        start = trio.current_time()
        end = start + h.ticks(4)

        async def taker() -> None:
            nonlocal admitted
            while (now := trio.current_time()) < end:
                wait = await state.take_tokens("shared", 1, capacity=capacity, refill_per_s=rate)
                if wait == 0.0:
                    admitted += 1
                else:
                    await trio.sleep(min(wait, end - now))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(taker)
        elapsed = trio.current_time() - start
    bound = capacity + rate * elapsed
    assert admitted <= bound + 1e-9, f"{admitted} admitted, at most {bound:.2f} allowed (capacity + rate x {elapsed:.3f} s)"
    assert admitted >= capacity, f"only {admitted} admitted: the burst alone allows {capacity}"


async def check_pubsub_reaches_every_subscriber(h: Harness[Any]) -> None:
    async with h.open() as state:
        async with state.subscribe("news") as first, state.subscribe("news") as second, state.subscribe("other") as other:
            assert await state.publish("news", b"1") == 2
            assert await state.publish("news", b"2") == 2
            for subscription in (first, second):
                assert [await next_message(subscription, h), await next_message(subscription, h)] == [b"1", b"2"]
            assert await state.publish("other", b"x") == 1
            assert await next_message(other, h) == b"x"  # and nothing of "news" before it
        assert await state.publish("news", b"gone") == 0  # the subscriptions ended with their blocks


async def check_pubsub_gives_only_what_was_published_after_subscribing(h: Harness[Any]) -> None:
    async with h.open() as state:
        assert await state.publish("late", b"before") == 0
        async with state.subscribe("late") as subscription:
            await state.publish("late", b"after")
            assert await next_message(subscription, h) == b"after"


async def check_a_slow_subscriber_drops_messages_rather_than_block_the_publisher(h: Harness[Any]) -> None:
    count = 3000  # past any subscriber buffer of the embedded State
    got: list[bytes] = []
    async with h.open() as state:
        async with state.subscribe("feed") as stalled, state.subscribe("feed") as reader:

            async def read() -> None:
                async for message in reader:
                    got.append(message)
                    if len(got) == count:
                        return

            published = 0
            with trio.move_on_after(h.ticks(1000)):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    for i in range(count):
                        await state.publish("feed", b"%d" % i)
                        published += 1
                        await trio.lowlevel.checkpoint()  # the reader keeps up
            assert published == count, f"publish blocked on a subscriber that does not read (after {published} messages)"
            assert got == [b"%d" % i for i in range(count)], "a subscriber that keeps up lost or reordered messages"
            kept: list[int] = []
            with trio.move_on_after(h.ticks(5)):
                while True:
                    kept.append(int(await stalled.__anext__()))
            assert kept == sorted(set(kept)) and set(kept) <= set(range(count)), "the slow subscriber got messages out of order"


# -- the Provider's gate: one bucket and one breaker shared by its workers ----------------

BUCKET = "gate:sms:bucket"
BREAKER = "gate:sms:breaker"


async def lease(h: Harness[Any], state: Any, want: int, give_back: tuple[str, int] | None = None, capacity: float = 10,
                rate: float = 10, lease_s: float = 5.0, reserve: int = 0) -> TokenLease:
    """A lease on the check's bucket: `rate` in tokens a tick, `lease_s` in ticks."""
    if reserve:
        return await state.lease_tokens(BUCKET, want, capacity, rate / h.ticks(1), h.ticks(lease_s), give_back, reserve)
    return await state.lease_tokens(BUCKET, want, capacity, rate / h.ticks(1), h.ticks(lease_s), give_back)


class Watch:
    """The time a real clock spent in a check's calls since it was made (the sleeps through it left out): 0 on a virtual clock."""

    def __init__(self, h: Harness[Any]) -> None:
        self.h, self.mark, self.slept = h, trio.current_time(), 0.0

    async def sleep(self, ticks: float) -> None:
        await self.h.sleep(ticks)
        self.slept += self.h.ticks(ticks)

    def extra_s(self) -> float:
        if self.h.factory.clock == "virtual":
            return 0.0
        return max(0.0, trio.current_time() - self.mark - self.slept)


def near(got: float, expected: float, below: float = 0.0, above: float = 0.0) -> bool:
    """`got` is `expected` (to rounding), or lies up to `below` under it or `above` over it."""
    tolerance = 1e-9 + 1e-6 * abs(expected)
    return expected - below - tolerance <= got <= expected + above + tolerance


def slow(h: Harness[Any], rate: float, real: float) -> float:
    """A bucket's rate in tokens a tick: `rate` on a virtual clock, `real` (slower: a call's time is then far below a token) on a real one."""
    return rate if h.factory.clock == "virtual" else real


async def check_a_lease_grants_whole_tokens_up_to_what_is_free(h: Harness[Any]) -> None:
    async with h.open() as state:
        first = await lease(h, state, 4)
        assert (first.granted, first.wait_s, first.free) == (4, 0.0, 6) and first.lease_id
        second = await lease(h, state, 10)  # only 6 left: a partial grant, at once
        assert (second.granted, second.wait_s, second.free) == (6, 0.0, 0) and second.lease_id != first.lease_id
        assert (await lease(h, state, 0)).free == 0  # want 0: a read
        nothing = await lease(h, state, 0, (second.lease_id, 0))
        assert (nothing.granted, nothing.lease_id, nothing.wait_s) == (0, "", 0.0)


async def check_leased_tokens_count_until_given_back_and_what_was_spent_is_gone(h: Harness[Any]) -> None:
    async with h.open() as state:
        held = await lease(h, state, 10, lease_s=60)
        await h.sleep(5)  # 5 ticks of refill would fill the bucket, but all 10 are out on lease
        assert (await lease(h, state, 0)).free == 0
        watch, rate_s = Watch(h), 10 / h.ticks(1)  # from the give back on (real clock) the 3 refill as the calls take time
        back = await lease(h, state, 0, (held.lease_id, 3))  # 7 spent, 3 back
        assert back.free == 3
        again = await lease(h, state, 0, (held.lease_id, 3))  # a second give back of the same lease: ignored
        assert near(again.free, 3, above=rate_s * watch.extra_s()), again
        took = (await lease(h, state, 5)).granted
        assert near(took, 3, above=min(2, math.floor(rate_s * watch.extra_s()))), took


async def check_unused_is_clamped_to_the_lease(h: Harness[Any]) -> None:
    async with h.open() as state:
        held = await lease(h, state, 2, lease_s=60)
        assert (await lease(h, state, 0, (held.lease_id, 50))).free == 10  # never more than it had
        other = await lease(h, state, 2, lease_s=60)
        assert (await lease(h, state, 0, (other.lease_id, -5))).free == 8  # never less than nothing


async def check_an_expired_lease_frees_its_tokens_once_and_cannot_be_given_back(h: Harness[Any]) -> None:
    async with h.open() as state:
        watch, rate_s = Watch(h), 10 / h.ticks(1)
        held = await lease(h, state, 10, lease_s=2.0)
        await watch.sleep(1.0)
        assert (await lease(h, state, 0)).free == 0  # still out
        await watch.sleep(1.5)  # the lease ended at 2; refill since: 0.5 ticks
        assert near((await lease(h, state, 0)).free, 5.0, above=rate_s * watch.extra_s())
        again = await lease(h, state, 0, (held.lease_id, 10))  # no mint
        assert near(again.free, 5.0, above=rate_s * watch.extra_s()), again


async def check_an_empty_bucket_reserves_and_callers_queue_up(h: Harness[Any]) -> None:
    async with h.open() as state:
        rate = slow(h, 100, 2)
        rate_s = rate / h.ticks(1)
        first = await lease(h, state, 10, rate=rate)
        watch = Watch(h)
        await lease(h, state, 0, (first.lease_id, 0), rate=rate)  # all ten spent: the lease closed
        waits = [(await lease(h, state, 3, rate=rate)).wait_s for _ in range(3)]
        # each slice once the refill has paid for it, one after the other
        for i, wait in enumerate(waits, 1):
            assert near(wait, h.ticks(3 * i / rate), below=watch.extra_s()), waits
        owed = (await lease(h, state, 0, rate=rate)).free
        assert near(owed, -9, above=rate_s * watch.extra_s()), owed  # owed to the reservations
        await watch.sleep(9 / rate)
        paid = (await lease(h, state, 0, rate=rate)).free
        assert near(paid, 0, above=rate_s * watch.extra_s()), paid


async def check_a_lease_with_a_reserve_leaves_the_reserve_and_owes_nothing(h: Harness[Any]) -> None:
    """The priority lanes: bulk leases with a reserve of 3 stop above it; a lease without one takes the last tokens."""
    rate = slow(h, 10, 1)
    rate_s = rate / h.ticks(1)
    async with h.open() as state:
        watch = Watch(h)
        bulk = await lease(h, state, 4, reserve=3, lease_s=60, rate=rate)
        assert (bulk.granted, bulk.wait_s, bulk.free) == (4, 0.0, 6)
        partial = await lease(h, state, 4, reserve=3, lease_s=60, rate=rate)  # only 3 above the reserve
        assert (partial.granted, partial.wait_s, partial.free) == (3, 0.0, 3)
        refused = await lease(h, state, 4, reserve=3, lease_s=60, rate=rate)  # at the reserve: nothing, no reservation, no debt
        assert (refused.granted, refused.lease_id, refused.free) == (0, "", 3)
        # and the time until one token lies above the reserve: the 7 out on lease cap the refill until they expire
        assert near(refused.wait_s, h.ticks(60 + 1 / rate), below=watch.extra_s()), refused
        watch = Watch(h)  # from the give backs on (real clock) the 3 free refill as the calls take time
        for spent in (bulk, partial):  # all spent: the leases closed
            await lease(h, state, 0, (spent.lease_id, 0), rate=rate)
        bulk_wait = (await lease(h, state, 4, reserve=3, rate=rate)).wait_s
        assert near(bulk_wait, h.ticks(1 / rate), below=watch.extra_s()), bulk_wait
        critical = await lease(h, state, 5, lease_s=60, rate=rate)  # no reserve: the last three at once
        assert (critical.granted, critical.wait_s) == (3, 0.0) and near(critical.free, 0, above=rate_s * watch.extra_s()), critical
        reserved = await lease(h, state, 2, lease_s=60, rate=rate)  # and then a reservation, as before
        assert reserved.granted == 2 and reserved.wait_s > 0 and near(reserved.free, -2, above=rate_s * watch.extra_s()), reserved
        owed = await lease(h, state, 1, reserve=3, lease_s=60, rate=rate)  # bulk waits until the debt and the reserve are paid
        assert owed.granted == 0 and near(owed.wait_s, h.ticks(6 / rate), below=watch.extra_s()), owed


async def check_a_reservation_waits_out_a_dead_workers_lease(h: Harness[Any]) -> None:
    async with h.open() as state:
        watch = Watch(h)
        await lease(h, state, 10, lease_s=3.0, rate=100)  # a worker takes everything and dies
        reserved = await lease(h, state, 5, rate=100)
        assert reserved.granted == 5 and near(reserved.wait_s, h.ticks(3.0 + 5 / 100), below=watch.extra_s()), reserved


async def check_lease_ids_are_never_reused(h: Harness[Any]) -> None:
    async with h.open() as state:
        seen = set()
        for _ in range(30):
            got = await lease(h, state, 1, lease_s=0.5, rate=1000)
            assert got.lease_id and got.lease_id not in seen
            seen.add(got.lease_id)
            if len(seen) % 3 == 0:
                await lease(h, state, 0, (got.lease_id, 1))
            await h.sleep(0.2)


async def check_concurrent_leases_never_hand_out_more_than_the_bucket_holds(h: Harness[Any]) -> None:
    answers: list[TokenLease] = []
    async with h.open() as state:

        async def contend() -> None:
            answers.append(await lease(h, state, 3, capacity=20, rate=10, lease_s=60))

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(contend)
    now = [a.granted for a in answers if a.wait_s == 0]
    assert sum(now) == 20 and max(now) == 3  # at once: what the bucket held, no more
    later = sorted(a.wait_s for a in answers if a.wait_s > 0)
    assert len(later) == 40 - len(now) and len(set(later)) == len(later)  # the rest reserved, each at its own time


async def check_a_changed_configuration_keeps_the_leases_out(h: Harness[Any]) -> None:
    async with h.open() as state:
        watch = Watch(h)
        await lease(h, state, 8, lease_s=60)
        smaller = await lease(h, state, 0, capacity=5, lease_s=60)
        assert smaller.free <= 0  # 8 are out: nothing is free under a capacity of 5
        await watch.sleep(10)
        # not until the 8 come back (a real clock's calls and a busy machine's late wake-ups take some of the 50)
        assert (await lease(h, state, 1, capacity=5, lease_s=60)).wait_s >= h.ticks(50) - watch.extra_s()


def breaker_config(h: Harness[Any]) -> BreakerConfig:
    return BreakerConfig(failure_threshold=3, open_timeout_s=h.ticks(10), success_threshold=2)


async def admit(h: Harness[Any], state: Any, owner: str, probe_lease_s: float = 5.0) -> BreakerView:
    """Ask the shared breaker whether `owner` may call; `probe_lease_s` in ticks."""
    view: BreakerView = await state.breaker_admit(BREAKER, breaker_config(h), owner, h.ticks(probe_lease_s))
    return view


async def report(h: Harness[Any], state: Any, owner: str, event: str, probe: bool = False) -> BreakerView:
    view: BreakerView = await state.breaker_report(BREAKER, breaker_config(h), owner, event, probe)
    return view


async def open_breaker(h: Harness[Any], state: Any) -> BreakerView:
    """Three failures, from three owners."""
    for owner in ("a", "b", "c"):
        view = await report(h, state, owner, "failure")
    return view


async def check_failures_from_any_owners_open_the_breaker_and_it_refuses_while_open(h: Harness[Any]) -> None:
    async with h.open() as state:
        assert (await state.breaker_read(BREAKER, breaker_config(h))).state == "closed"
        await report(h, state, "a", "failure")
        await report(h, state, "b", "failure")
        assert (await state.breaker_read(BREAKER, breaker_config(h))).consecutive_failures == 2
        watch = Watch(h)
        opened = await report(h, state, "c", "failure")
        assert opened.state == "open" and opened.transitions == ("closed->open",)
        assert near(opened.retry_in_s, h.ticks(10), below=watch.extra_s()), opened
        await watch.sleep(4)
        refused = await admit(h, state, "a")
        assert not refused.allowed and near(refused.retry_in_s, h.ticks(6), below=watch.extra_s()) and refused.rejected == 1


async def check_a_success_resets_the_failure_count_across_owners(h: Harness[Any]) -> None:
    async with h.open() as state:
        await report(h, state, "a", "failure")
        await report(h, state, "b", "failure")
        await report(h, state, "c", "success")
        assert (await report(h, state, "a", "failure")).state == "closed"


async def check_half_open_admits_one_probe_across_all_owners(h: Harness[Any]) -> None:
    views: dict[str, BreakerView] = {}
    async with h.open() as state:
        await open_breaker(h, state)
        await h.sleep(10)

        async def ask(owner: str) -> None:
            views[owner] = await admit(h, state, owner)

        async with trio.open_nursery() as nursery:
            for owner in "abcdefgh":
                nursery.start_soon(ask, owner)
    probes = [owner for owner, view in views.items() if view.allowed]
    assert len(probes) == 1 and views[probes[0]].probe and views[probes[0]].probe_owner == probes[0]
    assert sum(view.transitions == ("open->half_open",) for view in views.values()) == 1


async def check_only_the_probes_holder_settles_it(h: Harness[Any]) -> None:
    async with h.open() as state:
        await open_breaker(h, state)
        await h.sleep(10)
        assert (await admit(h, state, "a")).probe
        stale = await report(h, state, "b", "failure", probe=True)  # b does not hold it
        assert stale.state == "half_open" and stale.probe_owner == "a" and stale.stale_outcomes == 1
        assert (await report(h, state, "b", "release", probe=True)).probe_owner == "a"
        assert (await report(h, state, "a", "success", probe=True)).consecutive_successes == 1
        assert (await admit(h, state, "b")).probe
        closed = await report(h, state, "b", "success", probe=True)
        assert closed.state == "closed" and closed.transitions == ("half_open->closed",)


async def check_a_failed_probe_opens_it_again_and_a_released_one_frees_the_slot(h: Harness[Any]) -> None:
    async with h.open() as state:
        await open_breaker(h, state)
        await h.sleep(10)
        assert (await admit(h, state, "a")).probe
        released = await report(h, state, "a", "release", probe=True)
        assert released.state == "half_open" and released.probe_owner is None
        assert (await admit(h, state, "b")).probe
        reopened = await report(h, state, "b", "failure", probe=True)
        assert reopened.state == "open" and reopened.transitions == ("half_open->open",) and reopened.opened == 2


async def check_a_dead_probers_slot_frees_when_its_lease_ends(h: Harness[Any]) -> None:
    async with h.open() as state:
        await open_breaker(h, state)
        await h.sleep(10)
        assert (await admit(h, state, "a", probe_lease_s=3)).probe  # a dies with it
        early = 2.9 if h.factory.clock == "virtual" else 2.0  # a real clock's calls take time: ask well before the end
        await h.sleep(early)
        assert not (await admit(h, state, "b")).allowed
        await h.sleep(3 - early)
        taken = await admit(h, state, "b")
        assert taken.probe and taken.probe_owner == "b"
        late = await report(h, state, "a", "success", probe=True)  # a's answer, after its lease: not the probe's
        assert late.probe_owner == "b" and late.consecutive_successes == 0


async def check_outcomes_while_open_are_stale(h: Harness[Any]) -> None:
    async with h.open() as state:
        watch = Watch(h)
        await open_breaker(h, state)
        for event in ("success", "failure", "success"):
            view = await report(h, state, "d", event)
        assert view.state == "open" and view.stale_outcomes == 3 and near(view.retry_in_s, h.ticks(10), below=watch.extra_s()), view


# -- recent pushes: a bounded list per user, for a client resuming on any edge -------------


async def check_a_recent_list_keeps_its_newest_items_oldest_first(h: Harness[Any]) -> None:
    async with h.open() as state:
        assert await state.recent("recent:u1") == []
        for i in range(5):
            await state.append_recent("recent:u1", b"item %d" % i, 3, h.ticks(60))
        assert await state.recent("recent:u1") == [b"item 2", b"item 3", b"item 4"]
        await state.append_recent("recent:u2", b"other", 3, h.ticks(60))
        assert await state.recent("recent:u2") == [b"other"]  # lists are independent
        assert await state.recent("recent:u1") == [b"item 2", b"item 3", b"item 4"]


async def check_recent_items_come_back_byte_for_byte(h: Harness[Any]) -> None:
    odd = [b"", b"a b\nc", bytes(range(256)), b"\x00" * 7, "é ✓".encode()]
    async with h.open() as state:
        for item in odd:
            await state.append_recent("k", item, 10, h.ticks(60))
        assert await state.recent("k") == odd


async def check_a_recent_list_expires_its_ttl_after_the_last_append(h: Harness[Any]) -> None:
    async with h.open() as state:
        await state.append_recent("k", b"1", 10, h.ticks(60))
        await h.sleep(50)
        await state.append_recent("k", b"2", 10, h.ticks(60))  # the whole list lives 60 ticks from here
        await h.sleep(50)
        assert await state.recent("k") == [b"1", b"2"]
        await h.sleep(11)
        assert await state.recent("k") == []
        await state.append_recent("k", b"3", 10, h.ticks(60))  # a new list
        assert await state.recent("k") == [b"3"]


async def check_concurrent_recent_appends_lose_nothing(h: Harness[Any]) -> None:
    async with h.open() as state:
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(state.append_recent, "k", b"%02d" % i, 100, h.ticks(60))
        assert sorted(await state.recent("k")) == [b"%02d" % i for i in range(50)]
        async with trio.open_nursery() as nursery:
            for i in range(50, 90):
                nursery.start_soon(state.append_recent, "k", b"%02d" % i, 20, h.ticks(60))
        kept = await state.recent("k")
        assert len(kept) == 20 and len(set(kept)) == 20  # capped whatever the interleaving
