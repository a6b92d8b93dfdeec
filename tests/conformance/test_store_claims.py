"""Store conformance, the Scheduler's claims: claim_due and next_due_ms (reactor/ports.py states the semantics).

Every check takes `h`, a harness shaped like the shared one (tests/conformance/backends.py):
`h.open()` opens one more client of the same store (a node's connection), so that claimers
on separate connections can race. The local fixture serves the embedded store (two SQLite
connections on one file); the shared conformance fixture replaces it at merge. The checks are shown to catch broken stores
at the end of the file: one that hands a leased entry to a second claimer, one whose next
due time ignores leases.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from typing import Any

import pytest
import trio

from reactor.backends.embedded import SqliteStore
from reactor.ports import Scheduled, Store

OpenStore = Callable[[], AbstractAsyncContextManager[Store]]
T0 = 1_800_000_000_000
LEASE = 30_000


def entry(name: str, due_ms: int) -> Scheduled:
    return Scheduled(name, due_ms, "herald.sms", b"user", f"value of {name}".encode())


def ids(entries: list[Scheduled]) -> list[str]:
    return [e.id for e in entries]


def embedded(path: Path, kind: type[SqliteStore] = SqliteStore) -> OpenStore:
    @asynccontextmanager
    async def open_store() -> AsyncIterator[Store]:
        store = kind(path)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    return open_store


@pytest.fixture
def open_store(tmp_path: Path) -> OpenStore:
    return embedded(tmp_path / "store.sqlite3")


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


async def check_claims_only_due_entries_earliest_first_up_to_the_limit(h: Harness) -> None:
    async with h.open() as store:
        for name, due in (("c", T0 + 30), ("a", T0 + 10), ("later", T0 + 5000), ("b", T0 + 20), ("d", T0 + 30)):
            await store.schedule(entry(name, due))
        assert await store.next_due_ms() == T0 + 10
        assert await store.claim_due("n1", T0 + 5, 10, LEASE) == []  # nothing due yet
        first = await store.claim_due("n1", T0 + 100, 3, LEASE)
        assert ids(first) == ["a", "b", "c"]  # earliest due first (ties by id), at most the limit
        assert first[0] == entry("a", T0 + 10)  # the entry as scheduled, every field
        assert ids(await store.claim_due("n2", T0 + 100, 10, LEASE)) == ["d"]  # "later" is not due
        # a claim removes nothing
        assert sorted(ids(await store.scheduled())) == ["a", "b", "c", "d", "later"]
        await store.unschedule(["a", "b", "c", "d"])
        assert ids(await store.scheduled()) == ["later"]
        assert await store.next_due_ms() == T0 + 5000


async def check_a_leased_entry_goes_to_no_other_owner_until_the_lease_ends(h: Harness) -> None:
    async with h.open() as one, h.open() as other:
        await one.schedule(entry("x", T0))
        assert ids(await one.claim_due("n1", T0, 10, LEASE)) == ["x"]
        assert await other.claim_due("n2", T0 + 1, 10, LEASE) == []
        assert await other.claim_due("n2", T0 + LEASE - 1, 10, LEASE) == []  # the lease still runs
        assert ids(await one.claim_due("n1", T0 + 5, 10, LEASE)) == ["x"]  # its owner takes it back (a restart in place)
        assert await other.claim_due("n2", T0 + 5 + LEASE - 1, 10, LEASE) == []  # ... which renewed the lease
        assert ids(await other.claim_due("n2", T0 + 5 + LEASE, 10, LEASE)) == ["x"]  # ended: claimable again
        assert await one.claim_due("n1", T0 + 5 + LEASE + 1, 10, LEASE) == []  # now n2's
        await other.unschedule(["x"])
        assert await one.claim_due("n1", T0 + 10 * LEASE, 10, LEASE) == []
        assert await one.next_due_ms() is None


async def check_next_due_counts_the_end_of_a_lease(h: Harness) -> None:
    async with h.open() as store:
        assert await store.next_due_ms() is None
        await store.schedule(entry("x", T0))
        await store.schedule(entry("y", T0 + LEASE * 3))
        assert await store.next_due_ms() == T0
        assert ids(await store.claim_due("n1", T0 + 7, 1, LEASE)) == ["x"]
        assert await store.next_due_ms() == T0 + 7 + LEASE  # x is claimable again when its lease ends
        await store.unschedule(["x"])
        assert await store.next_due_ms() == T0 + LEASE * 3


async def check_scheduling_an_id_again_replaces_the_entry_and_its_lease(h: Harness) -> None:
    async with h.open() as store:
        await store.schedule(entry("x", T0))
        assert ids(await store.claim_due("n1", T0, 10, LEASE)) == ["x"]
        replaced = Scheduled("x", T0 + 50, "herald.sms", b"user", b"the new value")
        await store.schedule(replaced)
        assert await store.next_due_ms() == T0 + 50
        assert await store.claim_due("n2", T0 + 50, 10, LEASE) == [replaced]


async def check_concurrent_claimers_never_get_one_entry_twice(h: Harness) -> None:
    count = 120
    async with h.open() as one, h.open() as other:
        for i in range(count):
            await one.schedule(entry(f"e{i:03}", T0 + i % 17))
        got: Counter[str] = Counter()

        async def claimer(store: Store, owner: str) -> None:
            while batch := await store.claim_due(owner, T0 + 100, 7, LEASE):  # as a Scheduler: claim, produce, remove
                got.update(ids(batch))
                await trio.sleep(0)
                await store.unschedule(ids(batch))

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(claimer, one, f"one-{n}")
                nursery.start_soon(claimer, other, f"other-{n}")
        assert sum(got.values()) == count and len(got) == count, [i for i, n in got.items() if n > 1][:5]


CHECKS: dict[str, Callable[[Harness], Awaitable[None]]] = {
    name.removeprefix("check_"): check for name, check in globals().items() if name.startswith("check_")
}


@pytest.mark.parametrize("check", CHECKS)
async def test_store_claims(open_store: OpenStore, check: str) -> None:
    await CHECKS[check](Harness(open_store))


# -- broken stores: each is caught


class HandsOutLeasedEntries(SqliteStore):
    """Forgets the lease when it claims: a second claimer gets what the first one holds."""

    async def claim_due(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[Scheduled]:
        def claim(db: sqlite3.Connection) -> list[Scheduled]:
            rows = db.execute(
                "SELECT id, due_ms, topic, key, value FROM scheduled WHERE due_ms <= ? ORDER BY due_ms, id LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            return [Scheduled(r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in rows]

        return await self._transaction(claim)


class ClaimsInTwoSteps(SqliteStore):
    """Reads the claimable entries, then leases them in a second call: two claimers can read the same ones in between."""

    async def claim_due(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[Scheduled]:
        found = await self._run(lambda db: db.execute(
            "SELECT id, due_ms, topic, key, value FROM scheduled WHERE due_ms <= ? AND (lease_until <= ? OR owner = ?)"
            " ORDER BY due_ms, id LIMIT ?", (now_ms, now_ms, owner, limit),
        ).fetchall())
        await trio.sleep(0)
        await self._run(lambda db: db.executemany(
            "UPDATE scheduled SET owner = ?, lease_until = ? WHERE id = ?", [(owner, now_ms + lease_ms, r[0]) for r in found]
        ))
        return [Scheduled(r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in found]


class NextDueIgnoresLeases(SqliteStore):
    """Reports a leased entry's due time: a claimer would wake, find nothing, and spin until the lease ends."""

    async def next_due_ms(self) -> int | None:
        row = await self._run(lambda db: db.execute("SELECT min(due_ms) FROM scheduled").fetchone())
        return None if row[0] is None else int(row[0])


@pytest.mark.parametrize(
    "broken, check",
    [
        (HandsOutLeasedEntries, "a_leased_entry_goes_to_no_other_owner_until_the_lease_ends"),
        (HandsOutLeasedEntries, "concurrent_claimers_never_get_one_entry_twice"),
        (ClaimsInTwoSteps, "concurrent_claimers_never_get_one_entry_twice"),
        (NextDueIgnoresLeases, "next_due_counts_the_end_of_a_lease"),
    ],
)
async def test_a_broken_store_is_caught(tmp_path: Path, broken: type[SqliteStore], check: str) -> None:
    with pytest.raises(AssertionError):
        await CHECKS[check](Harness(embedded(tmp_path / "store.sqlite3", broken)))
