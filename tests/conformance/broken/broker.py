"""Deliberately broken Brokers: each is caught by a check of tests/conformance/suites/broker.py."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from reactor.backends.embedded.broker import MemoryBroker, MemorySubscription
from tests.conformance.backends import Factory, Place
from tests.conformance.suites.broker import BUFFER


def variant(kind: Callable[[int], MemoryBroker]) -> Factory[Any]:
    @asynccontextmanager
    async def open_(place: Place) -> AsyncIterator[MemoryBroker]:
        yield kind(BUFFER)

    return Factory(open_)


class StoresForLateSubscribers(MemoryBroker):
    """Keeps what nobody was subscribed to and hands it to the next subscriber (a history, unasked)."""

    def __init__(self, buffer: int = BUFFER) -> None:
        super().__init__(buffer)
        self.kept: dict[str, list[bytes]] = {}

    async def publish(self, user_id: str, message: bytes) -> int:
        reached = await super().publish(user_id, message)
        if not reached:
            self.kept.setdefault(user_id, []).append(message)
        return reached

    @asynccontextmanager
    async def subscriber(self) -> AsyncIterator[MemorySubscription]:
        async with super().subscriber() as subscription:
            broker = self
            plain = subscription.subscribe

            async def subscribe(user_id: str) -> None:
                await plain(user_id)
                for message in broker.kept.pop(user_id, []):
                    subscription._offer((user_id, message))

            subscription.subscribe = subscribe  # type: ignore[method-assign]
            yield subscription


class Reorders(MemoryBroker):
    """Delivers each user's messages two at a time, swapped."""

    def __init__(self, buffer: int = BUFFER) -> None:
        super().__init__(buffer)
        self.held: dict[str, bytes] = {}

    async def publish(self, user_id: str, message: bytes) -> int:
        if user_id in self.held:
            first = self.held.pop(user_id)
            await super().publish(user_id, message)
            return await super().publish(user_id, first)
        self.held[user_id] = message
        return len(self._channels.get(user_id, ()))


class DropsSilently(MemoryBroker):
    """A node whose buffer is full misses the message and is never told (State's pub/sub does this)."""

    async def publish(self, user_id: str, message: bytes) -> int:
        reached = 0
        for subscription in list(self._channels.get(user_id, ())):
            try:
                subscription._send.send_nowait((user_id, message))
                reached += 1
            except trio.WouldBlock:
                pass
        return reached


class WaitsForSlowNodes(MemoryBroker):
    """Holds the producer until every node has room."""

    async def publish(self, user_id: str, message: bytes) -> int:
        for subscription in list(self._channels.get(user_id, ())):
            await subscription._send.send((user_id, message))
        return len(self._channels.get(user_id, ()))


class KeepsSendingAfterUnsubscribe(MemoryBroker):
    @asynccontextmanager
    async def subscriber(self) -> AsyncIterator[MemorySubscription]:
        async with super().subscriber() as subscription:

            async def unsubscribe(user_id: str) -> None:
                await trio.lowlevel.checkpoint()

            subscription.unsubscribe = unsubscribe  # type: ignore[method-assign]
            yield subscription


class FansOutToEveryNode(MemoryBroker):
    """Sends every message to every subscription, whoever it holds (the producer does not route)."""

    async def publish(self, user_id: str, message: bytes) -> int:
        everyone = {s for subscribed in self._channels.values() for s in subscribed}
        return sum(s._offer((user_id, message)) for s in everyone)


class CountsMessagesNotNodes(MemoryBroker):
    """Answers 1 for a publish whoever got it."""

    async def publish(self, user_id: str, message: bytes) -> int:
        await super().publish(user_id, message)
        return 1


class SubscribesLate(MemoryBroker):
    """subscribe returns before the subscription is in effect: it takes effect on the next one."""

    @asynccontextmanager
    async def subscriber(self) -> AsyncIterator[MemorySubscription]:
        async with super().subscriber() as subscription:
            plain, pending = subscription.subscribe, deque[str]()

            async def subscribe(user_id: str) -> None:
                while pending:
                    await plain(pending.popleft())
                pending.append(user_id)

            subscription.subscribe = subscribe  # type: ignore[method-assign]
            yield subscription


class Duplicates(MemoryBroker):
    """Each subscribe adds one more: a node that subscribed twice to a user gets each message twice."""

    def __init__(self, buffer: int = BUFFER) -> None:
        super().__init__(buffer)
        self.times: dict[tuple[int, str], int] = {}

    @asynccontextmanager
    async def subscriber(self) -> AsyncIterator[MemorySubscription]:
        async with super().subscriber() as subscription:
            plain, times = subscription.subscribe, self.times

            async def subscribe(user_id: str) -> None:
                times[(id(subscription), user_id)] = times.get((id(subscription), user_id), 0) + 1
                await plain(user_id)

            subscription.subscribe = subscribe  # type: ignore[method-assign]
            yield subscription

    async def publish(self, user_id: str, message: bytes) -> int:
        reached = 0
        for subscription in list(self._channels.get(user_id, ())):
            for _ in range(self.times.get((id(subscription), user_id), 1)):
                reached += subscription._offer((user_id, message))
        return reached


class BatchKeepsOnePerUser(MemoryBroker):
    """A batch publish sends each user only the first of its messages (a page taken to hold each user once)."""

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        seen: set[str] = set()
        reached = []
        for user_id, message in messages:
            reached.append(self._publish(user_id, message) if user_id not in seen else len(self._channels.get(user_id, ())))
            seen.add(user_id)
        await trio.lowlevel.checkpoint()
        return reached


VARIANTS: dict[str, Factory[Any]] = {
    cls.__name__: variant(cls)
    for cls in (
        StoresForLateSubscribers, Reorders, DropsSilently, WaitsForSlowNodes, KeepsSendingAfterUnsubscribe, FansOutToEveryNode,
        CountsMessagesNotNodes, SubscribesLate, Duplicates, BatchKeepsOnePerUser,
    )
}
