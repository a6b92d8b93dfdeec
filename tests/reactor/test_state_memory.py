"""The embedded State backend under MockClock."""

import trio

from reactor.state_memory import MemoryState


async def test_put_if_absent_with_ttl(autojump_clock):
    state = MemoryState()
    assert await state.put_if_absent("k", b"1", ttl_s=10) is None
    assert await state.put_if_absent("k", b"2", ttl_s=10) == b"1"
    await trio.sleep(11)
    assert await state.get("k") is None
    assert await state.put_if_absent("k", b"3", ttl_s=10) is None
    assert await state.get("k") == b"3"


async def test_take_tokens_is_exact(autojump_clock):
    state = MemoryState()
    granted = 0
    for _ in range(15):
        if await state.take_tokens("b", 1, capacity=10, refill_per_s=2) == 0.0:
            granted += 1
    assert granted == 10
    wait = await state.take_tokens("b", 1, capacity=10, refill_per_s=2)
    assert wait == 0.5
    await trio.sleep(wait)
    assert await state.take_tokens("b", 1, capacity=10, refill_per_s=2) == 0.0


async def test_pubsub_reaches_every_subscriber():
    state = MemoryState()
    async with state.subscribe("c") as first, state.subscribe("c") as second:
        assert await state.publish("c", b"hi") == 2
        assert await first.receive() == b"hi"
        assert await second.receive() == b"hi"
    assert await state.publish("c", b"gone") == 0
