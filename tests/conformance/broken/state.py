"""Deliberately broken State backends: each is an embedded one with one mistake a State backend could make.

The keys' mistakes are made on the SQLite-backed State; the gate's and the recent pushes'
on the in-memory one (where the SQLite-backed State keeps them too).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from reactor.backends.embedded import MemoryState, SqliteState
from reactor.backends.embedded.memory_state import SUBSCRIBER_BUFFER
from reactor.circuit_breaker import BreakerConfig
from reactor.gate_state import SharedBreaker
from reactor.ports import BreakerEvent, BreakerView, TokenLease
from tests.conformance.backends import Factory, Place, sqlite


class TtlNeverExpires(SqliteState):
    @staticmethod
    def _expiry(ttl_s: float | None) -> int | None:
        return None


class ExpiresAtHalfTheTtl(SqliteState):
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await super().set(key, value, None if ttl_s is None else ttl_s / 2)

    async def put_if_absent(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        return await super().put_if_absent(key, value, ttl_s / 2)


class SetKeepsTheOldTtl(SqliteState):
    """SET ... KEEPTTL where a plain SET was meant."""

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        row = await self._run(lambda db: db.execute("SELECT expires_ms FROM kv WHERE key = ?", (key,)).fetchone())
        await super().set(key, value, ttl_s)
        if row is not None:
            await self._run(lambda db: db.execute("UPDATE kv SET expires_ms = ? WHERE key = ?", (row[0], key)))


class RacyPutIfAbsent(SqliteState):
    """GET, then SET: two callers can both see the key absent."""

    async def put_if_absent(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        existing = await self.get(key)
        if existing is not None:
            return existing
        await self.set(key, value, ttl_s)
        return None


class EmptyValueCountsAsAbsent(SqliteState):
    async def put_if_absent(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        existing = await self.get(key)
        if existing:  # b"" is falsy: an empty value is taken for no value
            return existing
        await self.set(key, value, ttl_s)
        return None


class NonAtomicTakeTokens(SqliteState):
    """Reads the bucket, makes a round trip, then writes it back: concurrent takers each see the same tokens."""

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self._levels: dict[str, tuple[float, float]] = {}

    async def take_tokens(self, key: str, n: float, capacity: float, refill_per_s: float) -> float:
        now = trio.current_time()
        level, updated = self._levels.get(key, (capacity, now))
        level = min(capacity, level + (now - updated) * refill_per_s)
        await trio.lowlevel.checkpoint()  # between the read and the write
        if level >= n:
            self._levels[key] = (level - n, now)
            return 0.0
        self._levels[key] = (level, now)
        return (n - level) / refill_per_s


class RefillsPastCapacity(SqliteState):
    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self._levels: dict[str, tuple[float, float]] = {}

    async def take_tokens(self, key: str, n: float, capacity: float, refill_per_s: float) -> float:
        now = trio.current_time()
        level, updated = self._levels.get(key, (capacity, now))
        level += (now - updated) * refill_per_s  # no min(capacity, ...)
        if level >= n:
            self._levels[key] = (level - n, now)
            return 0.0
        self._levels[key] = (level, now)
        return (n - level) / refill_per_s


class PublishesToOneSubscriber(SqliteState):
    """A queue where a fan-out was meant: each message goes to one subscriber."""

    async def publish(self, channel: str, message: bytes) -> int:
        for send in list(self._subscribers.get(channel, ())):
            try:
                send.send_nowait(message)
            except trio.WouldBlock:
                return 0
            return 1
        return 0


class PublishWaitsForSlowSubscribers(SqliteState):
    async def publish(self, channel: str, message: bytes) -> int:
        subscribers = list(self._subscribers.get(channel, ()))
        for send in subscribers:
            await send.send(message)
        return len(subscribers)


class ReplaysTheLastMessageToNewSubscribers(SqliteState):
    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self._last: dict[str, bytes] = {}

    async def publish(self, channel: str, message: bytes) -> int:
        self._last[channel] = message
        return await super().publish(channel, message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        send, receive = trio.open_memory_channel[bytes](SUBSCRIBER_BUFFER)
        if channel in self._last:
            send.send_nowait(self._last[channel])
        self._subscribers.setdefault(channel, set()).add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers[channel].discard(send)


# -- the Provider's gate ---------------------------------------------------------------


class ForgetsLeasedTokens(MemoryState):
    """Refills over tokens out on lease: a take-tokens bucket with a lease id bolted on."""

    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        answer = await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back, reserve)
        self._leased_buckets[key].leases.clear()
        return answer


class TakesBackExpiredLeases(MemoryState):
    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        bucket = self._leased_buckets.get(key)
        if give_back is not None and bucket is not None and give_back[0] not in bucket.leases:
            bucket.free = min(bucket.capacity, bucket.free + give_back[1])
        return await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back, reserve)


class ReusesLeaseIds(MemoryState):
    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        answer = await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back, reserve)
        bucket = self._leased_buckets[key]
        if answer.granted and len(bucket.leases) == 1:  # numbering starts again whenever nothing is out
            bucket.next_id = 1
        return answer


class RefusesInsteadOfReserving(MemoryState):
    """An empty bucket answers "come back later": the waiting callers then all wake at once and race."""

    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        answer = await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back, reserve)
        if answer.wait_s > 0 and answer.granted:
            return await super().lease_tokens(key, 0, capacity, refill_per_s, lease_s, (answer.lease_id, answer.granted), reserve)
        return answer


class IgnoresTheReserve(MemoryState):
    """Bulk leases take the critical lane's reserve as if there were none."""

    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        return await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back)


class AdmitsAProbePerOwner(MemoryState):
    async def breaker_admit(self, key: str, config: BreakerConfig, owner: str, probe_lease_s: float) -> BreakerView:
        shared = self._breaker(key)
        if shared.probe_owner not in (None, owner):
            shared.snapshot = dataclasses.replace(shared.snapshot, probe_in_flight=False)
        return await super().breaker_admit(key, config, owner, probe_lease_s)


class KeepsADeadProbersSlot(MemoryState):
    def _breaker(self, key: str) -> SharedBreaker:
        shared = super()._breaker(key)
        if shared.probe_owner is not None:
            shared.probe_expires = math.inf
        return shared


class CountsFailuresPerOwner(MemoryState):
    async def breaker_report(self, key: str, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool) -> BreakerView:
        return await super().breaker_report(f"{key}:{owner}", config, owner, event, probe)


# -- recent pushes ------------------------------------------------------------------------


class RecentListsUnbounded(MemoryState):
    """Never trims: a user's list grows without end."""

    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        await super().append_recent(key, item, 10**9, ttl_s)


class RecentListsNeverExpire(MemoryState):
    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        await super().append_recent(key, item, max_items, 10**9)


class RecentTtlFromTheFirstAppend(MemoryState):
    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        found = self._recent.get(key)
        await super().append_recent(key, item, max_items, ttl_s)
        if found is not None and found[1] > trio.current_time():
            self._recent[key] = (self._recent[key][0], found[1])


def _broken(kind: type[SqliteState]) -> Factory[Any]:
    return sqlite(kind, "state.sqlite3", clock="virtual", autojump_s=0.03)


def _in_memory(kind: type[MemoryState]) -> Factory[Any]:
    @asynccontextmanager
    async def open_(place: Place) -> AsyncIterator[MemoryState]:
        yield kind()

    return Factory(open_)


VARIANTS: dict[str, Factory[Any]] = {
    **{
        kind.__name__: _broken(kind)
        for kind in (
            TtlNeverExpires, ExpiresAtHalfTheTtl, SetKeepsTheOldTtl, RacyPutIfAbsent, EmptyValueCountsAsAbsent,
            NonAtomicTakeTokens, RefillsPastCapacity,
            PublishesToOneSubscriber, PublishWaitsForSlowSubscribers, ReplaysTheLastMessageToNewSubscribers,
        )
    },
    **{
        kind.__name__: _in_memory(kind)
        for kind in (
            ForgetsLeasedTokens, TakesBackExpiredLeases, ReusesLeaseIds, RefusesInsteadOfReserving, IgnoresTheReserve, AdmitsAProbePerOwner,
            KeepsADeadProbersSlot, CountsFailuresPerOwner,
            RecentListsUnbounded, RecentListsNeverExpire, RecentTtlFromTheFirstAppend,
        )
    },
}

# The checks each variant was written against: each of them must catch it (test_catches_broken.py).
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "ForgetsLeasedTokens": ("leased_tokens_count_until_given_back_and_what_was_spent_is_gone",),
    "TakesBackExpiredLeases": ("an_expired_lease_frees_its_tokens_once_and_cannot_be_given_back",),
    "ReusesLeaseIds": ("lease_ids_are_never_reused",),
    "RefusesInsteadOfReserving": ("an_empty_bucket_reserves_and_callers_queue_up",),
    "IgnoresTheReserve": ("a_lease_with_a_reserve_leaves_the_reserve_and_owes_nothing",),
    "AdmitsAProbePerOwner": ("half_open_admits_one_probe_across_all_owners",),
    "KeepsADeadProbersSlot": ("a_dead_probers_slot_frees_when_its_lease_ends",),
    "CountsFailuresPerOwner": ("failures_from_any_owners_open_the_breaker_and_it_refuses_while_open",),
    "RecentListsUnbounded": ("a_recent_list_keeps_its_newest_items_oldest_first", "concurrent_recent_appends_lose_nothing"),
    "RecentListsNeverExpire": ("a_recent_list_expires_its_ttl_after_the_last_append",),
    "RecentTtlFromTheFirstAppend": ("a_recent_list_expires_its_ttl_after_the_last_append",),
}
