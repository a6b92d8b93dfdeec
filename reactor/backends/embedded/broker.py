"""The embedded Broker: in this process's memory, for the nodes (systems) of one process.

A channel per user; each subscription (a node) has a bounded buffer. A publish puts the
message in the buffer of every subscription to the user without waiting: a subscription
whose buffer is full is cut off (its `messages()` raises BrokerLost once it has read what
was buffered), as Redis drops a pub/sub client past its output buffer limit. So the memory
broker never holds a producer back, and a node that falls behind learns it lost messages
rather than missing some silently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from reactor.ports import BrokerLost

SUBSCRIPTION_BUFFER = 65_536  # messages a node may be behind before it is cut off (Redis: 32 MB of output buffer)
READ_BURST = 64  # buffered messages a subscription's reader takes without yielding to the event loop


class MemorySubscription:
    """One node's subscription: the users it receives, and its buffer."""

    def __init__(self, broker: MemoryBroker, buffer: int) -> None:
        self._broker = broker
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes]](buffer)
        self.users: set[str] = set()
        self.lost = False
        self._burst = 0  # messages read since the reader last yielded

    async def subscribe(self, user_id: str) -> None:
        self._check()
        self.users.add(user_id)
        self._broker._channels.setdefault(user_id, set()).add(self)
        await trio.lowlevel.checkpoint()

    async def unsubscribe(self, user_id: str) -> None:
        self.users.discard(user_id)
        self._broker._leave(self, user_id)
        await trio.lowlevel.checkpoint()

    def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        return self

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        # What is buffered is read without a turn of the scheduler for each (a page published at once), but the
        # reader still yields every READ_BURST messages: a long backlog does not hold the event loop.
        if self._burst < READ_BURST:
            try:
                item = self._receive.receive_nowait()
            except trio.WouldBlock:
                pass
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self.lost:
                    raise BrokerLost(f"cut off: more than {self._broker.buffer} messages behind") from None
                raise StopAsyncIteration from None
            else:
                self._burst += 1
                return item
        self._burst = 0
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.lost:
                raise BrokerLost(f"cut off: more than {self._broker.buffer} messages behind") from None
            raise StopAsyncIteration from None

    def _offer(self, item: tuple[str, bytes]) -> bool:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._cut_off()
            return False
        except trio.ClosedResourceError:
            return False
        return True

    def _cut_off(self) -> None:
        self.lost = True
        self._close()

    def _close(self) -> None:
        for user_id in list(self.users):
            self._broker._leave(self, user_id)
        self.users.clear()
        self._send.close()  # what is buffered still reads; then messages() ends (raising BrokerLost if cut off)

    def _check(self) -> None:
        if self.lost:
            raise BrokerLost("cut off: open a new subscription")


class MemoryBroker:
    """The Broker port in memory (reactor/ports.py)."""

    def __init__(self, buffer: int = SUBSCRIPTION_BUFFER) -> None:
        self.buffer = buffer
        self._channels: dict[str, set[MemorySubscription]] = {}
        self.published = 0
        self.cut_off = 0

    async def publish(self, user_id: str, message: bytes) -> int:
        reached = self._publish(user_id, message)
        await trio.lowlevel.checkpoint()
        return reached

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        reached = [self._publish(user_id, message) for user_id, message in messages]
        await trio.lowlevel.checkpoint()
        return reached

    def _publish(self, user_id: str, message: bytes) -> int:
        reached = 0
        for subscription in list(self._channels.get(user_id, ())):
            if subscription._offer((user_id, message)):
                reached += 1
            else:
                self.cut_off += 1
        self.published += 1
        return reached

    @asynccontextmanager
    async def subscriber(self) -> AsyncIterator[MemorySubscription]:
        subscription = MemorySubscription(self, self.buffer)
        try:
            yield subscription
        finally:
            subscription._close()

    def _leave(self, subscription: MemorySubscription, user_id: str) -> None:
        subscribed = self._channels.get(user_id)
        if subscribed is not None:
            subscribed.discard(subscription)
            if not subscribed:
                del self._channels[user_id]

    def subscriptions(self, user_id: str) -> int:
        """How many subscriptions the user's channel has (for tests and statistics)."""
        return len(self._channels.get(user_id, ()))
