"""The gate's deferral counters count deliveries: every one that waited for an open breaker or for a token, not only the
one whose admission turn it was (the others of its lane wait for their turn meanwhile: they wait for the same thing).

`herald simulate`'s deferred columns and GET /v1/admin/circuits (`deferred`, `throttled`) read these counters.
"""

from __future__ import annotations

import trio

from actors.services.gate import Limits, ResilienceGate
from protocol.channels import Channel, Priority
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, RetryLater, Sent
from reactor.backends.embedded import MemoryState
from reactor.circuit_breaker import BreakerConfig, BreakerState


def delivery(n: int, priority: Priority = Priority.NORMAL) -> Delivery:
    return Delivery(f"01J00000000000000000000{n:03d}", f"user-{n}", Channel.SMS, 0, Content(sms=SmsContent("hi")),
                    address="+15555550100", priority=priority)


async def test_every_delivery_held_by_an_open_breaker_counts_as_deferred(autojump_clock):
    gate = ResilienceGate("sms", Limits(1000, 1000, BreakerConfig(failure_threshold=2, open_timeout_s=30, success_threshold=1)),
                          MemoryState())
    for n in range(2):
        await gate.admit(delivery(n))
        await gate.settle(delivery(n), RetryLater("down"))
    assert gate.breaker.state_at(trio.current_time()) is BreakerState.OPEN
    admitted = []

    async def admit(n: int) -> None:
        await gate.admit(delivery(n))
        admitted.append(n)
        await gate.settle(delivery(n), Sent())

    async with trio.open_nursery() as nursery:
        for n in range(10, 20):  # ten deliveries arrive while it is open: one waits in its turn, nine for their turn
            nursery.start_soon(admit, n)
    assert sorted(admitted) == list(range(10, 20))
    assert gate.deferred == 10
    assert gate.throttled == 0


async def test_every_delivery_held_by_an_empty_bucket_counts_as_throttled(autojump_clock):
    gate = ResilienceGate("sms", Limits(capacity=2, refill_per_s=10, breaker=BreakerConfig()), MemoryState())
    async with trio.open_nursery() as nursery:
        for n in range(12):  # a burst of two goes at once; the other ten wait for the refill, one in turn, the rest behind it
            nursery.start_soon(gate.admit, delivery(n))
    assert gate.throttled == 10
    assert gate.deferred == 0


async def test_a_delivery_that_got_its_turn_at_once_is_not_counted(autojump_clock):
    gate = ResilienceGate("sms", Limits(capacity=100, refill_per_s=100, breaker=BreakerConfig()), MemoryState())
    async with trio.open_nursery() as nursery:
        for n in range(20):  # they take turns (a State round trip each at most), and none waits for a token
            nursery.start_soon(gate.admit, delivery(n))
    assert gate.throttled == 0 and gate.deferred == 0
