"""The embedded State backend: one process, in memory, on Trio's clock.

Keys are bounded (`max_keys`): past the bound, the least recently written key goes, as
in a Redis with an LRU eviction policy. Expired keys go when read or evicted. Token
buckets are bounded the same way (least recently used first: one that went is full again).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

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
