"""The Broker port's suite (tests/conformance/suites/broker.py) on every backend serving it."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import trio
from trio.testing import MockClock

from reactor.backends.embedded.broker import MemoryBroker
from reactor.ports import BrokerLost
from tests.conformance.backends import Harness, check_id, checks_of
from tests.conformance.suites import broker as suite
from tests.conformance.suites.broker import received

PORT = "broker"


@pytest.mark.parametrize("check", checks_of(suite), ids=check_id)
async def test_broker(check: Callable[[Harness[Any]], Any], harness: Harness[Any], clock: MockClock) -> None:
    await check(harness)


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
