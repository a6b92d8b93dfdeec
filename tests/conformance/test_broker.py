"""The Broker port's conformance suite: the semantics every backend keeps (reactor/ports.py Broker).

A channel per user, subscribed by the nodes holding the user's sessions: a publish reaches
every subscription to the user now, exactly once each, in publish order per user, and
answers how many that is; it is never stored for a later subscriber; an unsubscribe (or
leaving the subscriber block) stops it; a subscriber that does not read is never waited
for, and loses nothing silently: what it gets is an in-order prefix, then BrokerLost.

Each check is a plain function of a broker, run against the backend (`broker`, a local
fixture yielding the memory broker; the shared conformance fixture replaces it at merge)
and, in test_a_broken_broker_is_caught, against deliberately broken brokers, each of which
one of the checks must catch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from reactor.backends.embedded.broker import MemoryBroker, MemorySubscription
from reactor.ports import Broker, BrokerLost, BrokerSubscription

BUFFER = 64  # the memory broker's subscription buffer in these checks (a node's real one is far larger)
BOUND_S = 5  # every check ends within this; a broker that blocks is caught by it


@pytest.fixture
def broker() -> Broker:
    return MemoryBroker(buffer=BUFFER)


async def received(subscription: BrokerSubscription, count: int) -> list[tuple[str, bytes]]:
    """The next `count` messages of the subscription."""
    got: list[tuple[str, bytes]] = []
    if count == 0:
        return got
    with trio.fail_after(BOUND_S):
        async for item in subscription.messages():
            got.append(item)
            if len(got) == count:
                break
    return got


async def nothing_more(subscription: BrokerSubscription) -> bool:
    """Whether nothing else is waiting on the subscription (every task blocked, then a look)."""
    await wait_all_tasks_blocked()
    with trio.move_on_after(0.05):
        async for _item in subscription.messages():
            return False
    return True


# -- the checks


async def check_a_publish_reaches_the_subscribed_node_and_no_one_else(broker: Broker) -> None:
    async with broker.subscriber() as node, broker.subscriber() as other:
        await node.subscribe("alice")
        await other.subscribe("bob")
        assert await broker.publish("alice", b"hello") == 1
        assert await received(node, 1) == [("alice", b"hello")]
        assert await nothing_more(other)
        assert await nothing_more(node)


async def check_every_node_of_a_user_gets_it_once_and_the_count_is_nodes(broker: Broker) -> None:
    async with broker.subscriber() as a, broker.subscriber() as b:
        await a.subscribe("alice")
        await a.subscribe("alice")  # again: still one subscription
        await b.subscribe("alice")
        assert await broker.publish("alice", b"m") == 2
        assert await received(a, 1) == [("alice", b"m")]
        assert await received(b, 1) == [("alice", b"m")]
        assert await nothing_more(a) and await nothing_more(b)


async def check_nothing_is_stored_for_a_later_subscriber(broker: Broker) -> None:
    assert await broker.publish("alice", b"early") == 0
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        assert await nothing_more(node)
        assert await broker.publish("alice", b"late") == 1
        assert await received(node, 1) == [("alice", b"late")]


async def check_a_subscription_is_in_effect_when_subscribe_returns(broker: Broker) -> None:
    async with broker.subscriber() as node:
        for i in range(20):
            user = f"u{i}"
            await node.subscribe(user)
            assert await broker.publish(user, b"right after") == 1
            assert await received(node, 1) == [(user, b"right after")]


async def check_order_per_user_is_publish_order(broker: Broker) -> None:
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        await node.subscribe("bob")
        sent = [(user, f"{user}-{i}".encode()) for i in range(BUFFER // 2) for user in ("alice", "bob")]  # within its buffer
        for user, message in sent:
            await broker.publish(user, message)
        got = await received(node, len(sent))
        for user in ("alice", "bob"):
            assert [m for u, m in got if u == user] == [m for u, m in sent if u == user]


async def check_unsubscribing_stops_it(broker: Broker) -> None:
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        await node.subscribe("bob")
        await node.unsubscribe("alice")
        await node.unsubscribe("carol")  # never subscribed: nothing happens
        assert await broker.publish("alice", b"gone") == 0
        assert await broker.publish("bob", b"still") == 1
        assert await received(node, 1) == [("bob", b"still")]
        assert await nothing_more(node)


async def check_leaving_the_block_unsubscribes_from_everyone(broker: Broker) -> None:
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        await node.subscribe("bob")
    assert await broker.publish("alice", b"x") == 0
    assert await broker.publish("bob", b"x") == 0


async def check_a_node_that_does_not_read_is_not_waited_for_and_loses_nothing_silently(broker: Broker) -> None:
    count = 20 * BUFFER
    async with broker.subscriber() as slow, broker.subscriber() as fast:
        await slow.subscribe("alice")
        await fast.subscribe("alice")
        got_fast: list[tuple[str, bytes]] = []

        async def read_fast() -> None:
            got_fast.extend(await received(fast, count))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_fast)
            with trio.fail_after(BOUND_S):  # a broker that waits for the slow node never gets through this
                for i in range(count):
                    await broker.publish("alice", str(i).encode())
        assert got_fast == [("alice", str(i).encode()) for i in range(count)]  # the other node lost nothing
        got_slow: list[bytes] = []
        lost = False
        with trio.fail_after(BOUND_S):
            try:
                async for _user, message in slow.messages():
                    got_slow.append(message)
                    if len(got_slow) == count:
                        break
            except BrokerLost:
                lost = True
        assert got_slow == [str(i).encode() for i in range(len(got_slow))]  # an in-order prefix: no gap
        assert lost or len(got_slow) == count  # fewer than all: said so


CHECKS: list[Callable[[Broker], Awaitable[None]]] = [
    check_a_publish_reaches_the_subscribed_node_and_no_one_else,
    check_every_node_of_a_user_gets_it_once_and_the_count_is_nodes,
    check_nothing_is_stored_for_a_later_subscriber,
    check_a_subscription_is_in_effect_when_subscribe_returns,
    check_order_per_user_is_publish_order,
    check_unsubscribing_stops_it,
    check_leaving_the_block_unsubscribes_from_everyone,
    check_a_node_that_does_not_read_is_not_waited_for_and_loses_nothing_silently,
]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
async def test_the_broker_keeps_its_semantics(
    broker: Broker, check: Callable[[Broker], Awaitable[None]], autojump_clock: trio.abc.Clock,  # a bound that runs out costs no time
) -> None:
    await check(broker)


# -- broken brokers: each is caught by a check above


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


BROKEN: list[tuple[type[MemoryBroker], Callable[[Broker], Awaitable[None]]]] = [
    (StoresForLateSubscribers, check_nothing_is_stored_for_a_later_subscriber),
    (Reorders, check_order_per_user_is_publish_order),
    (DropsSilently, check_a_node_that_does_not_read_is_not_waited_for_and_loses_nothing_silently),
    (WaitsForSlowNodes, check_a_node_that_does_not_read_is_not_waited_for_and_loses_nothing_silently),
    (KeepsSendingAfterUnsubscribe, check_unsubscribing_stops_it),
    (FansOutToEveryNode, check_a_publish_reaches_the_subscribed_node_and_no_one_else),
    (CountsMessagesNotNodes, check_nothing_is_stored_for_a_later_subscriber),
    (SubscribesLate, check_a_subscription_is_in_effect_when_subscribe_returns),
    (Duplicates, check_every_node_of_a_user_gets_it_once_and_the_count_is_nodes),
]


def failures(error: BaseException) -> list[BaseException]:
    """The exceptions an error stands for (those inside an exception group)."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in failures(inner)]
    return [error]


@pytest.mark.parametrize("broken, check", BROKEN, ids=[b.__name__ for b, _ in BROKEN])
async def test_a_broken_broker_is_caught(
    broken: type[MemoryBroker], check: Callable[[Broker], Awaitable[None]], autojump_clock: trio.abc.Clock,
) -> None:
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - the check fails as checks do (below)
        await check(broken(BUFFER))
    assert all(isinstance(e, (AssertionError, trio.TooSlowError)) for e in failures(caught.value)), caught.value


async def test_a_subscription_cut_off_cannot_subscribe_again(autojump_clock: trio.abc.Clock) -> None:
    broker = MemoryBroker(buffer=1)
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        await broker.publish("alice", b"1")
        await broker.publish("alice", b"2")  # over its buffer: cut off
        assert broker.subscriptions("alice") == 0
        with pytest.raises(BrokerLost):
            await node.subscribe("bob")
        assert await received(node, 1) == [("alice", b"1")]
        with pytest.raises(BrokerLost):
            await received(node, 1)
