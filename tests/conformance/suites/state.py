"""The State port's conformance checks (reactor/ports.py, State): what a Redis must keep as the embedded one does.

TTLs and waits are counted in the harness's ticks: a second of MockClock time for a
backend on Trio's clock (an hour takes no time), a few hundredths of a real second for a
server with a clock of its own. Races are real races: N tasks call at once, and the
backend's own I/O decides the interleaving.
"""

from __future__ import annotations

from typing import Any

import trio

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
        await h.sleep(1000)  # a long idle time refills the bucket, to its capacity and no further
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
                        await trio.sleep(0)  # the reader keeps up
            assert published == count, f"publish blocked on a subscriber that does not read (after {published} messages)"
            assert got == [b"%d" % i for i in range(count)], "a subscriber that keeps up lost or reordered messages"
            kept: list[int] = []
            with trio.move_on_after(h.ticks(5)):
                while True:
                    kept.append(int(await stalled.__anext__()))
            assert kept == sorted(set(kept)) and set(kept) <= set(range(count)), "the slow subscriber got messages out of order"
