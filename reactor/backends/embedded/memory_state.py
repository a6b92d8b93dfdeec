"""The embedded State backend: one process, in memory, on Trio's clock.

Keys are bounded (`max_keys`): past the bound, the least recently written key goes, as
in a Redis with an LRU eviction policy. Expired keys go when read or evicted. Token
buckets are bounded the same way (least recently used first: one that went is full again).

The gate's shared bucket and breaker (reactor/gate_state.py) are kept per key in memory
too, each operation one step of the pure machine at Trio's clock with no checkpoint
inside: atomic, as the Lua script of a Redis backend is.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from reactor.circuit_breaker import BreakerConfig
from reactor.gate_state import LeasedBucket, SharedBreaker
from reactor.ports import BreakerEvent, BreakerView, TokenLease
from reactor.token_bucket import TokenBucket

SUBSCRIBER_BUFFER = 1000


class MemoryState:
    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
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
        give_back: tuple[str, int] | None = None,
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
        return bucket.lease(want, lease_s, now, give_back)

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
