"""The embedded State backend: one process, in memory, on Trio's clock.

Keys are bounded (`max_keys`): past the bound, the least recently written key goes, as
in a Redis with an LRU eviction policy. Expired keys go when read or evicted. Token
buckets are bounded the same way (least recently used first: one that went is full again).

The gate's shared bucket and breaker (reactor/gate_state.py) are kept per key in memory
too, each operation one step of the pure machine at Trio's clock with no checkpoint
inside: atomic, as the Lua script of a Redis backend is.

The recent-push lists are bounded by their items, all lists together (`max_recent_items`):
past it, the oldest items of the least recently appended list go first.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from reactor.circuit_breaker import BreakerConfig
from reactor.gate_state import LeasedBucket, SharedBreaker
from reactor.ports import BreakerEvent, BreakerView, TokenLease
from reactor.token_bucket import TokenBucket

SUBSCRIBER_BUFFER = 1000
MAX_RECENT_ITEMS = 16_384  # all recent-push lists together: 4 x the in-flight web pushes of 64 partitions of 256


class MemoryState:
    def __init__(self, max_keys: int = 100_000, max_recent_items: int = MAX_RECENT_ITEMS) -> None:
        self.max_keys = max_keys
        self.max_recent_items = max_recent_items
        # key -> (items oldest first, expiry on Trio's clock); least recently appended first
        self._recent: OrderedDict[str, tuple[deque[bytes], float]] = OrderedDict()
        self._recent_items = 0
        self.evicted_recent = 0
        self._values: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.evicted = 0
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._subscribers: dict[str, set[trio.MemorySendChannel[bytes]]] = {}
        self.dropped_messages = 0
        self._leased_buckets: OrderedDict[str, LeasedBucket] = OrderedDict()
        self._breakers: OrderedDict[str, SharedBreaker] = OrderedDict()

    def _live(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires <= trio.current_time():
            del self._values[key]
            return None
        return value

    async def put_if_absent(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        existing = self._live(key)
        if existing is not None:
            return existing
        self._store(key, value, trio.current_time() + ttl_s)
        return None

    def _store(self, key: str, value: bytes, expires: float) -> None:
        self._values[key] = (value, expires)
        self._values.move_to_end(key)
        while len(self._values) > self.max_keys:
            self._values.popitem(last=False)
            self.evicted += 1

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        expires = math.inf if ttl_s is None else trio.current_time() + ttl_s
        self._store(key, value, expires)

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)

    async def take_tokens(self, key: str, n: float, capacity: float, refill_per_s: float) -> float:
        now = trio.current_time()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.capacity != capacity or bucket.refill_per_s != refill_per_s:
            bucket = self._buckets[key] = TokenBucket(capacity, refill_per_s, updated=now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        if bucket.try_take(n, now):
            return 0.0
        return bucket.time_until(n, now)

    # -- the Provider's gate, shared by its workers ----------------------------------------

    async def lease_tokens(
        self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
        give_back: tuple[str, int] | None = None, reserve: int = 0,
    ) -> TokenLease:
        now = trio.current_time()
        bucket = self._leased_buckets.get(key)
        if bucket is None:
            bucket = self._leased_buckets[key] = LeasedBucket(capacity, refill_per_s, updated=now)
            while len(self._leased_buckets) > self.max_keys:
                self._leased_buckets.popitem(last=False)
        else:
            bucket.configure(capacity, refill_per_s, now)
        self._leased_buckets.move_to_end(key)
        return bucket.lease(want, lease_s, now, give_back, reserve)

    def _breaker(self, key: str) -> SharedBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = SharedBreaker()
            while len(self._breakers) > self.max_keys:
                self._breakers.popitem(last=False)
        self._breakers.move_to_end(key)
        return breaker

    async def breaker_admit(self, key: str, config: BreakerConfig, owner: str, probe_lease_s: float) -> BreakerView:
        return self._breaker(key).admit(config, owner, probe_lease_s, trio.current_time())

    async def breaker_report(self, key: str, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool) -> BreakerView:
        return self._breaker(key).report(config, owner, event, probe, trio.current_time())

    async def breaker_read(self, key: str, config: BreakerConfig) -> BreakerView:
        return self._breaker(key).read(config, trio.current_time())

    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        if max_items < 1 or ttl_s <= 0:
            raise ValueError("a recent list keeps at least one item, for a TTL above 0")
        now = trio.current_time()
        items = self._live_recent(key, now)
        if items is None:
            items = deque()
        else:
            del self._recent[key]  # appended to again: it goes to the end (most recently appended)
        items.append(item)
        self._recent_items += 1
        while len(items) > max_items:
            items.popleft()
            self._recent_items -= 1
        self._recent[key] = (items, now + ttl_s)
        # the lists appended to least lately come first: drop the expired ones, then, past the bound, their oldest items
        while self._recent:
            first, (old, expires) = next(iter(self._recent.items()))
            if expires <= now:
                del self._recent[first]
                self._recent_items -= len(old)
            elif self._recent_items > self.max_recent_items:
                old.popleft()
                self._recent_items -= 1
                self.evicted_recent += 1
                if not old:
                    del self._recent[first]
            else:
                break

    async def recent(self, key: str) -> list[bytes]:
        items = self._live_recent(key, trio.current_time())
        return [] if items is None else list(items)

    def _live_recent(self, key: str, now: float) -> deque[bytes] | None:
        found = self._recent.get(key)
        if found is None:
            return None
        if found[1] <= now:
            del self._recent[key]
            self._recent_items -= len(found[0])
            return None
        return found[0]

    async def publish(self, channel: str, message: bytes) -> int:
        delivered = 0
        for send in list(self._subscribers.get(channel, ())):
            try:
                send.send_nowait(message)
                delivered += 1
            except trio.WouldBlock:
                self.dropped_messages += 1  # a subscriber that does not keep up loses messages, as with Redis
        return delivered

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        send, receive = trio.open_memory_channel[bytes](SUBSCRIBER_BUFFER)
        self._subscribers.setdefault(channel, set()).add(send)
        try:
            async with receive:
                yield receive
        finally:
            subscribers = self._subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(send)
                if not subscribers:
                    del self._subscribers[channel]
