"""State conformance, recent pushes: append_recent and recent (reactor/ports.py states the semantics), under MockClock.

The local fixture serves the embedded States (in memory; SQLite-backed); the shared
conformance fixture replaces it at merge. The checks are shown to catch broken States at
the end of the file: a list that is not bounded, one that never expires, one whose TTL
runs from the first append rather than the last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from typing import Any

import pytest
import trio

from reactor.backends.embedded import MemoryState, SqliteState
from reactor.ports import State

OpenState = Callable[[], AbstractAsyncContextManager[State]]


def embedded_memory(kind: type[MemoryState] = MemoryState) -> OpenState:
    @asynccontextmanager
    async def open_state() -> AsyncIterator[State]:
        yield kind()

    return open_state


def embedded_sqlite(path: Path) -> OpenState:
    @asynccontextmanager
    async def open_state() -> AsyncIterator[State]:
        state = SqliteState(path)
        await state.open()
        try:
            yield state
        finally:
            await state.close()

    return open_state


@pytest.fixture(params=["memory", "sqlite"])
def open_state(request: pytest.FixtureRequest, tmp_path: Path) -> OpenState:
    return embedded_memory() if request.param == "memory" else embedded_sqlite(tmp_path / "state.sqlite3")


@pytest.fixture
def clock(mock_clock):  # type: ignore[no-untyped-def]
    mock_clock.autojump_threshold = 0.03  # the SQLite-backed State works in threads
    return mock_clock


class Harness:
    """What a check is given: the shape of tests/conformance/backends.Harness (`open()`: one more client of the
    same data; `sleep(ticks)`), so the lead can move these checks into the shared suites as they are."""

    def __init__(self, open_: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._open = open_

    def open(self) -> AbstractAsyncContextManager[Any]:
        return self._open()

    async def sleep(self, ticks: float) -> None:
        await trio.sleep(ticks)


# -- the checks


async def check_a_list_keeps_its_newest_items_oldest_first(h: Harness) -> None:
    async with h.open() as state:
        assert await state.recent("recent:u1") == []
        for i in range(5):
            await state.append_recent("recent:u1", b"item %d" % i, 3, 60)
        assert await state.recent("recent:u1") == [b"item 2", b"item 3", b"item 4"]
        await state.append_recent("recent:u2", b"other", 3, 60)
        assert await state.recent("recent:u2") == [b"other"]  # lists are independent
        assert await state.recent("recent:u1") == [b"item 2", b"item 3", b"item 4"]


async def check_items_come_back_byte_for_byte(h: Harness) -> None:
    odd = [b"", b"a b\nc", bytes(range(256)), b"\x00" * 7, "é ✓".encode()]
    async with h.open() as state:
        for item in odd:
            await state.append_recent("k", item, 10, 60)
        assert await state.recent("k") == odd


async def check_a_list_expires_its_ttl_after_the_last_append(h: Harness) -> None:
    async with h.open() as state:
        await state.append_recent("k", b"1", 10, 60)
        await h.sleep(50)
        await state.append_recent("k", b"2", 10, 60)  # the whole list lives 60 s from here
        await h.sleep(50)
        assert await state.recent("k") == [b"1", b"2"]
        await h.sleep(11)
        assert await state.recent("k") == []
        await state.append_recent("k", b"3", 10, 60)  # a new list
        assert await state.recent("k") == [b"3"]


async def check_concurrent_appends_lose_nothing(h: Harness) -> None:
    async with h.open() as state:
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(state.append_recent, "k", b"%02d" % i, 100, 60)
        assert sorted(await state.recent("k")) == [b"%02d" % i for i in range(50)]
        async with trio.open_nursery() as nursery:
            for i in range(50, 90):
                nursery.start_soon(state.append_recent, "k", b"%02d" % i, 20, 60)
        kept = await state.recent("k")
        assert len(kept) == 20 and len(set(kept)) == 20  # capped whatever the interleaving


CHECKS: dict[str, Callable[[Harness], Awaitable[None]]] = {
    name.removeprefix("check_"): check for name, check in globals().items() if name.startswith("check_")
}


@pytest.mark.parametrize("check", CHECKS)
async def test_state_recent(open_state: OpenState, check: str, clock) -> None:  # type: ignore[no-untyped-def]
    await CHECKS[check](Harness(open_state))


async def test_the_embedded_state_bounds_all_lists_together(clock) -> None:  # type: ignore[no-untyped-def]
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


# -- broken States: each is caught


class Unbounded(MemoryState):
    """Never trims: a user's list grows without end."""

    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        await super().append_recent(key, item, 10**9, ttl_s)


class NeverExpires(MemoryState):
    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        await super().append_recent(key, item, max_items, 10**9)


class TtlFromTheFirstAppend(MemoryState):
    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        found = self._recent.get(key)
        await super().append_recent(key, item, max_items, ttl_s)
        if found is not None and found[1] > trio.current_time():
            self._recent[key] = (self._recent[key][0], found[1])


@pytest.mark.parametrize(
    "broken, check",
    [
        (Unbounded, "a_list_keeps_its_newest_items_oldest_first"),
        (Unbounded, "concurrent_appends_lose_nothing"),
        (NeverExpires, "a_list_expires_its_ttl_after_the_last_append"),
        (TtlFromTheFirstAppend, "a_list_expires_its_ttl_after_the_last_append"),
    ],
)
async def test_a_broken_state_is_caught(broken: type[MemoryState], check: str, clock) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AssertionError):
        await CHECKS[check](Harness(embedded_memory(broken)))
