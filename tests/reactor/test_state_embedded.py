"""What only the embedded State backends promise: SQLite's keys survive a restart, the memory one is bounded
(its keys, and its recent-push lists all together).

The State port's semantics (TTLs, put-if-absent races, take-tokens, the gate's leases and
breaker, recent pushes, pub/sub) are checked
on every backend by its conformance suite, tests/conformance/suites/state.py.
"""

from contextlib import asynccontextmanager

import trio

from reactor.backends.embedded import MemoryState, SqliteState


@asynccontextmanager
async def sqlite(tmp_path):
    state = SqliteState(tmp_path / "state.sqlite3")
    await state.open()
    try:
        yield state
    finally:
        await state.close()


async def test_sqlite_keys_survive_a_restart(tmp_path, mock_clock):
    mock_clock.autojump_threshold = 0.03  # the SQLite backend works in threads
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


async def test_the_memory_backend_bounds_all_recent_lists_together(mock_clock):
    mock_clock.autojump_threshold = 0
    state = MemoryState(max_recent_items=4)
    await state.append_recent("a", b"a1", 10, 60)
    await state.append_recent("a", b"a2", 10, 60)
    await state.append_recent("b", b"b1", 10, 60)
    await state.append_recent("b", b"b2", 10, 60)
    await state.append_recent("b", b"b3", 10, 60)  # past the bound: a, appended to least lately, loses its oldest
    assert await state.recent("a") == [b"a2"] and await state.recent("b") == [b"b1", b"b2", b"b3"]
    await state.append_recent("c", b"c1", 10, 60)
    assert await state.recent("a") == [] and state.evicted_recent == 2
    await trio.sleep(61)
    await state.append_recent("d", b"d1", 10, 60)  # the expired lists go
    assert await state.recent("b") == [] and await state.recent("d") == [b"d1"]
