"""The State port's conformance suite: every backend passes the same tests (under MockClock)."""

from contextlib import asynccontextmanager

import pytest
import trio

from reactor.backends.embedded import MemoryState, SqliteState


@asynccontextmanager
async def memory(tmp_path):
    yield MemoryState()


@asynccontextmanager
async def sqlite(tmp_path):
    state = SqliteState(tmp_path / "state.sqlite3")
    await state.open()
    try:
        yield state
    finally:
        await state.close()


@pytest.fixture(params=[memory, sqlite], ids=["memory", "sqlite"])
def backend(request):
    return request.param


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03  # the SQLite backend works in threads
    return mock_clock


async def test_put_if_absent_with_ttl(tmp_path, backend, clock):
    async with backend(tmp_path) as state:
        assert await state.put_if_absent("k", b"1", ttl_s=10) is None
        assert await state.put_if_absent("k", b"2", ttl_s=10) == b"1"
        await trio.sleep(11)
        assert await state.get("k") is None
        assert await state.put_if_absent("k", b"3", ttl_s=10) is None
        assert await state.get("k") == b"3"


async def test_set_get_delete(tmp_path, backend, clock):
    async with backend(tmp_path) as state:
        await state.set("a", b"x")
        await state.set("b", b"y", ttl_s=5)
        assert (await state.get("a"), await state.get("b")) == (b"x", b"y")
        await trio.sleep(6)
        assert (await state.get("a"), await state.get("b")) == (b"x", None)
        await state.delete("a")
        assert await state.get("a") is None


async def test_concurrent_put_if_absent_has_one_winner(tmp_path, backend, clock):
    async with backend(tmp_path) as state:
        winners = []

        async def contend(i):
            if await state.put_if_absent("race", str(i).encode(), ttl_s=60) is None:
                winners.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(contend, i)
        assert len(winners) == 1
        assert await state.get("race") == str(winners[0]).encode()


async def test_take_tokens_is_exact(tmp_path, backend, autojump_clock):
    async with backend(tmp_path) as state:
        granted = 0
        for _ in range(15):
            if await state.take_tokens("b", 1, capacity=10, refill_per_s=2) == 0.0:
                granted += 1
        assert granted == 10
        wait = await state.take_tokens("b", 1, capacity=10, refill_per_s=2)
        assert wait == 0.5
        await trio.sleep(wait)
        assert await state.take_tokens("b", 1, capacity=10, refill_per_s=2) == 0.0


async def test_pubsub_reaches_every_subscriber(tmp_path, backend):
    async with backend(tmp_path) as state:
        async with state.subscribe("c") as first, state.subscribe("c") as second:
            assert await state.publish("c", b"hi") == 2
            assert await first.receive() == b"hi"
            assert await second.receive() == b"hi"
        assert await state.publish("c", b"gone") == 0


async def test_sqlite_keys_survive_a_restart(tmp_path, clock):
    async with sqlite(tmp_path) as state:
        await state.put_if_absent("idempotency:k", b"v", ttl_s=3600)
    async with sqlite(tmp_path) as state:
        assert await state.put_if_absent("idempotency:k", b"other", ttl_s=3600) == b"v"


async def test_the_memory_backend_is_bounded_and_evicts_the_least_recently_written():
    state = MemoryState(max_keys=3)
    for key in "abcd":
        await state.set(key, key.encode())
    assert await state.get("a") is None
    assert [await state.get(k) for k in "bcd"] == [b"b", b"c", b"d"]
    await state.set("b", b"again")  # written again: now the newest
    await state.set("e", b"e")
    assert await state.get("c") is None and await state.get("b") == b"again"
    assert state.evicted == 2
