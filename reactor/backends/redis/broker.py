"""The Redis Broker: a channel per user (`<prefix>user:<id>`), a pub/sub connection per node.

A node's subscription (`subscriber()`) is one Redis connection (reactor/backends/redis/pubsub.py);
PUBLISH answers how many connections are subscribed to the user's channel, that is how many
nodes hold a live session of the user. What arrives is buffered for the node's reader up to
`buffer` messages: past it the subscription is cut off (its connection closed, so Redis drops
its subscriptions), and `messages()` raises BrokerLost once the reader has what was buffered.
Redis also cuts off a subscriber past its own output buffer limit (client-output-buffer-limit
pubsub, 32 MB by default); the connection then drops and the same BrokerLost follows. Never
stored, at most once: a node that subscribes after a publish does not get it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import redis
import trio

from reactor.ports import BrokerLost, PortUnavailable

from .client import RedisClient
from .pubsub import Listener

SUBSCRIPTION_BUFFER = 65_536  # messages a node may be behind before it is cut off (as the memory broker)


class RedisSubscription:
    """One node's subscription to the Broker (reactor/ports.py BrokerSubscription)."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker
        self._prefix = broker.channel_prefix.encode()
        self._buffer: deque[tuple[str, bytes]] = deque()
        self._arrived = trio.Event()
        self.cut_off: str | None = None  # why, once cut off
        self.users: set[str] = set()
        self.listener = Listener(broker.client.connection_kwargs(), self._on_message, self._on_lost, broker.client.settings.timeout_s)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if self.cut_off is not None:
            return
        if len(self._buffer) >= self._broker.buffer:
            self._broker.cut_offs += 1
            self._lose(f"cut off: more than {self._broker.buffer} messages behind")
            return
        self._buffer.append((channel[len(self._prefix):].decode(), data))
        self._arrived.set()

    def _on_lost(self, why: str) -> None:
        if self.cut_off is None:
            self.cut_off = f"the Redis connection dropped ({why})"
        self._arrived.set()

    def _lose(self, why: str) -> None:
        self.cut_off = why
        self.listener.stop()  # the connection closes: Redis drops its subscriptions
        self._arrived.set()

    def _check(self) -> None:
        if self.cut_off is not None:
            raise BrokerLost(f"{self.cut_off}: open a new subscription")

    async def subscribe(self, user_id: str) -> None:
        self._check()
        try:
            await self.listener.command("SUBSCRIBE", self._broker.channel(user_id))
        except PortUnavailable as exc:
            raise BrokerLost(str(exc)) from exc
        self.users.add(user_id)

    async def unsubscribe(self, user_id: str) -> None:
        if self.cut_off is not None:
            return  # subscribed to nobody any more
        try:
            await self.listener.command("UNSUBSCRIBE", self._broker.channel(user_id))
        except PortUnavailable as exc:
            raise BrokerLost(str(exc)) from exc
        self.users.discard(user_id)

    def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        return self

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        while not self._buffer:
            if self.cut_off is not None:
                raise BrokerLost(self.cut_off)
            self._arrived = trio.Event()
            await self._arrived.wait()
        return self._buffer.popleft()

    async def _leave(self) -> None:
        """Unsubscribe from everyone, confirmed (a publish after the block reaches no one here)."""
        if self.cut_off is None and self.listener.lost is None:
            try:
                await self.listener.command("UNSUBSCRIBE")
            except PortUnavailable:
                pass  # the connection is gone: Redis dropped its subscriptions with it
        self.listener.stop()


class RedisBroker:
    """The Broker port on Redis pub/sub (reactor/ports.py Broker)."""

    def __init__(self, client: RedisClient, buffer: int = SUBSCRIPTION_BUFFER) -> None:
        self.client = client
        self.buffer = buffer
        self.channel_prefix = client.settings.prefix + "user:"
        self.cut_offs = 0

    def channel(self, user_id: str) -> str:
        return self.channel_prefix + user_id

    async def publish(self, user_id: str, message: bytes) -> int:
        channel = self.channel(user_id)
        return int(await self.client.call(lambda r: r.publish(channel, message)))

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Every PUBLISH in one pipeline (not a transaction: each is its own command, in order): one round trip."""
        if not messages:
            return []
        channels = [(self.channel(user_id), message) for user_id, message in messages]

        def publish_all(r: redis.Redis) -> list[int]:
            pipe = r.pipeline(transaction=False)
            for channel, message in channels:
                pipe.publish(channel, message)
            return [int(n) for n in pipe.execute()]

        return await self.client.call(publish_all)

    @asynccontextmanager
    async def subscriber(self) -> AsyncIterator[RedisSubscription]:
        subscription = RedisSubscription(self)
        async with trio.open_nursery() as nursery:
            await nursery.start(subscription.listener.run)
            try:
                yield subscription
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2 * self.client.settings.timeout_s + 1):
                    await subscription._leave()
                subscription.listener.stop()
