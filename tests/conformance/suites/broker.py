"""The Broker port's suite (reactor/ports.py Broker): the semantics every backend keeps.

A channel per user, subscribed by the nodes holding the user's sessions: a publish reaches
every subscription to the user now, exactly once each, in publish order per user, and
answers how many that is; it is never stored for a later subscriber; an unsubscribe (or
leaving the subscriber block) stops it; a subscriber that does not read is never waited
for, and loses nothing silently: what it gets is an in-order prefix, then BrokerLost.

A backend is opened with a subscription buffer of BUFFER messages (the memory broker's
constructor argument; a server-backed broker states its own and the slow-node check
publishes past it). A check that does not end within BOUND_S is a broker that blocks: the
check fails with an AssertionError, as the harness expects of every check.
"""

from __future__ import annotations

from collections.abc import Awaitable

import trio
from trio.testing import wait_all_tasks_blocked

from reactor.ports import Broker, BrokerLost, BrokerSubscription
from tests.conformance.backends import Harness

BUFFER = 64  # the memory broker's subscription buffer in these checks (a node's real one is far larger)
BOUND_S = 5  # every check ends within this; a broker that blocks is caught by it


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



async def bounded(check: Awaitable[None]) -> None:
    """Run a check; a broker that makes it hang fails it."""
    try:
        await check
    except* trio.TooSlowError:
        raise AssertionError(f"did not end within {BOUND_S} s: the broker blocks") from None


# -- what each check asserts


async def _a_publish_reaches_the_subscribed_node_and_no_one_else(broker: Broker) -> None:
    async with broker.subscriber() as node, broker.subscriber() as other:
        await node.subscribe("alice")
        await other.subscribe("bob")
        assert await broker.publish("alice", b"hello") == 1
        assert await received(node, 1) == [("alice", b"hello")]
        assert await nothing_more(other)
        assert await nothing_more(node)


async def _every_node_of_a_user_gets_it_once_and_the_count_is_nodes(broker: Broker) -> None:
    async with broker.subscriber() as a, broker.subscriber() as b:
        await a.subscribe("alice")
        await a.subscribe("alice")  # again: still one subscription
        await b.subscribe("alice")
        assert await broker.publish("alice", b"m") == 2
        assert await received(a, 1) == [("alice", b"m")]
        assert await received(b, 1) == [("alice", b"m")]
        assert await nothing_more(a) and await nothing_more(b)


async def _nothing_is_stored_for_a_later_subscriber(broker: Broker) -> None:
    assert await broker.publish("alice", b"early") == 0
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        assert await nothing_more(node)
        assert await broker.publish("alice", b"late") == 1
        assert await received(node, 1) == [("alice", b"late")]


async def _a_subscription_is_in_effect_when_subscribe_returns(broker: Broker) -> None:
    async with broker.subscriber() as node:
        for i in range(20):
            user = f"u{i}"
            await node.subscribe(user)
            assert await broker.publish(user, b"right after") == 1
            assert await received(node, 1) == [(user, b"right after")]


async def _order_per_user_is_publish_order(broker: Broker) -> None:
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        await node.subscribe("bob")
        sent = [(user, f"{user}-{i}".encode()) for i in range(BUFFER // 2) for user in ("alice", "bob")]  # within its buffer
        for user, message in sent:
            await broker.publish(user, message)
        got = await received(node, len(sent))
        for user in ("alice", "bob"):
            assert [m for u, m in got if u == user] == [m for u, m in sent if u == user]


async def _unsubscribing_stops_it(broker: Broker) -> None:
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        await node.subscribe("bob")
        await node.unsubscribe("alice")
        await node.unsubscribe("carol")  # never subscribed: nothing happens
        assert await broker.publish("alice", b"gone") == 0
        assert await broker.publish("bob", b"still") == 1
        assert await received(node, 1) == [("bob", b"still")]
        assert await nothing_more(node)


async def _a_node_whose_last_user_left_subscribes_again(broker: Broker) -> None:
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        await node.unsubscribe("alice")  # subscribed to nobody now: the node stays usable
        assert await broker.publish("alice", b"gone") == 0
        await node.subscribe("bob")
        assert await broker.publish("bob", b"back") == 1
        assert await received(node, 1) == [("bob", b"back")]
        assert await nothing_more(node)


async def _leaving_the_block_unsubscribes_from_everyone(broker: Broker) -> None:
    async with broker.subscriber() as node:
        await node.subscribe("alice")
        await node.subscribe("bob")
    assert await broker.publish("alice", b"x") == 0
    assert await broker.publish("bob", b"x") == 0


async def _a_node_that_does_not_read_is_not_waited_for_and_loses_nothing_silently(broker: Broker) -> None:
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



async def _a_batch_publish_is_each_publish_in_order(broker: Broker) -> None:
    async with broker.subscriber() as a, broker.subscriber() as b:
        await a.subscribe("alice")
        await a.subscribe("bob")
        await b.subscribe("bob")
        batch = [("alice", b"1"), ("bob", b"2"), ("carol", b"3"), ("alice", b"4"), ("bob", b"5"), ("alice", b"6")]
        assert await broker.publish_many(batch) == [1, 2, 0, 1, 2, 1]  # each one's count: nodes, in the batch's order
        got = await received(a, 5)
        assert sorted(got) == sorted(m for m in batch if m[0] in ("alice", "bob"))  # each once
        for user in ("alice", "bob"):
            assert [m for u, m in got if u == user] == [m for u, m in batch if u == user]  # in order per user
        assert await received(b, 2) == [("bob", b"2"), ("bob", b"5")]
        assert await nothing_more(a) and await nothing_more(b)
        assert await broker.publish_many([]) == []
        assert await broker.publish("alice", b"after") == 1  # one publish after a batch: in order behind it
        assert await received(a, 1) == [("alice", b"after")]


# -- the checks, as the harness runs them: each on a broker opened for it


async def check_a_publish_reaches_the_subscribed_node_and_no_one_else(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_a_publish_reaches_the_subscribed_node_and_no_one_else(broker))


async def check_every_node_of_a_user_gets_it_once_and_the_count_is_nodes(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_every_node_of_a_user_gets_it_once_and_the_count_is_nodes(broker))


async def check_nothing_is_stored_for_a_later_subscriber(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_nothing_is_stored_for_a_later_subscriber(broker))


async def check_a_subscription_is_in_effect_when_subscribe_returns(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_a_subscription_is_in_effect_when_subscribe_returns(broker))


async def check_order_per_user_is_publish_order(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_order_per_user_is_publish_order(broker))


async def check_unsubscribing_stops_it(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_unsubscribing_stops_it(broker))


async def check_a_node_whose_last_user_left_subscribes_again(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_a_node_whose_last_user_left_subscribes_again(broker))


async def check_leaving_the_block_unsubscribes_from_everyone(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_leaving_the_block_unsubscribes_from_everyone(broker))


async def check_a_node_that_does_not_read_is_not_waited_for_and_loses_nothing_silently(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_a_node_that_does_not_read_is_not_waited_for_and_loses_nothing_silently(broker))


async def check_a_batch_publish_is_each_publish_in_order(h: Harness[Broker]) -> None:
    async with h.open() as broker:
        await bounded(_a_batch_publish_is_each_publish_in_order(broker))
