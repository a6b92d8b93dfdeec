"""Deliberately broken State backends: each is the embedded one with one mistake a State backend could make."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from reactor.backends.embedded import SqliteState
from reactor.backends.embedded.memory_state import SUBSCRIBER_BUFFER
from tests.conformance.backends import Factory, sqlite


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
        await trio.sleep(0)  # between the read and the write
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


def _broken(kind: type[SqliteState]) -> Factory[Any]:
    return sqlite(kind, "state.sqlite3", clock="virtual", autojump_s=0.03)


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: _broken(kind)
    for kind in (
        TtlNeverExpires, ExpiresAtHalfTheTtl, SetKeepsTheOldTtl, RacyPutIfAbsent, EmptyValueCountsAsAbsent, NonAtomicTakeTokens,
        RefillsPastCapacity, PublishesToOneSubscriber, PublishWaitsForSlowSubscribers, ReplaysTheLastMessageToNewSubscribers,
    )
}
