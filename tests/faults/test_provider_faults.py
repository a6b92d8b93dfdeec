"""Fault injection under MockClock: a provider that fails, a provider that stays down.

The whole node runs (bus, scheduler, recorder, providers with their gates), with
submissions made through Ingress directly. Under MockClock, simulated time jumps to the
next deadline once every task has waited `autojump_threshold` of real time, which is
what makes a 60 s breaker timeout take milliseconds. The threshold is 30 ms, not 0: the
node's file and SQLite I/O runs in threads, and with 0 the clock would leap ahead
while a thread is still writing.
"""

from __future__ import annotations

import time

import pytest
import trio

from protocol.api import NotificationRequest
from protocol.channels import Channel
from protocol.content import Content, Recipient, SmsContent
from protocol.lifecycle import FINAL
from protocol.messages import RetryLater, Sent
from reactor.circuit_breaker import BreakerState
from reactor.ports import DlqFilter
from tests.helpers import running_node

F, TIMEOUT_S, S = 5, 60.0, 3


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03
    return mock_clock


class ScriptedSms:
    """Fails while `down`; records, for every call, the breaker's state and the calls in flight: the most at once,
    the users with two at once, and the calls that overlapped a half-open probe."""

    def __init__(self) -> None:
        self.down = True
        self.calls: list[tuple[float, BreakerState, str]] = []
        self.in_flight: dict[str, BreakerState] = {}  # notification id -> the breaker's state when its call started
        self.users: list[str] = []  # the users of the calls in flight
        self.max_in_flight = 0
        self.same_user_at_once: set[str] = set()
        self.beside_a_probe = 0  # calls in flight at once with a call that started half-open
        self.provider = None  # set once the node is up

    async def send(self, delivery):
        now = trio.current_time()
        state = self.provider.gate.breaker.state_at(now)
        if delivery.user_id in self.users:
            self.same_user_at_once.add(delivery.user_id)
        self.users.append(delivery.user_id)
        self.in_flight[delivery.notification_id] = state
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        if len(self.in_flight) > 1 and BreakerState.HALF_OPEN in self.in_flight.values():
            self.beside_a_probe += 1
        try:
            self.calls.append((now, state, "fail" if self.down else "ok"))
            await trio.sleep(0.01)  # the provider takes a moment to answer
            return RetryLater("scripted outage") if self.down else Sent()
        finally:
            del self.in_flight[delivery.notification_id]
            self.users.remove(delivery.user_id)


def sms(user: str) -> NotificationRequest:
    return NotificationRequest(user_id=user, channels=[Channel.SMS], content=Content(sms=SmsContent("hi")), to=Recipient(phone="+15555550100"))


async def statuses(herald, ids):
    rows = {}
    for nid in ids:
        for row in await herald.logstore.statuses(nid):
            rows[nid] = row.status
    return rows


async def wait_settled(herald, ids, seconds: float):
    """Let simulated time run until every channel is final (bounded in simulated time)."""
    with trio.move_on_after(seconds):
        while True:
            current = await statuses(herald, ids)
            if len(current) == len(ids) and all(s in {f.value for f in FINAL} for s in current.values()):
                return current
            await trio.sleep(1)
    return await statuses(herald, ids)


def limits(**breaker):
    return {"sms": {"capacity": 1000, "refill_per_s": 1000, "failure_threshold": F, "open_timeout_s": TIMEOUT_S, "success_threshold": S, **breaker}}


async def test_breaker_opens_after_f_failures_probes_once_closes_after_s_and_loses_nothing(tmp_path, clock):
    client = ScriptedSms()
    async with running_node(tmp_path, clients={Channel.SMS: client}, limits=limits(), max_attempts=20, retry_initial_s=1, retry_max_s=30) as herald:
        client.provider = herald.providers[Channel.SMS]
        wall_start = trio.current_time()
        real_start = time.perf_counter()
        # 20 users, two notifications each: the provider runs many users' calls at once, each user's one at a time
        ids = [(await herald.ingress.accept(sms(f"user{i % 20}"))).notification_id for i in range(40)]
        await trio.sleep(TIMEOUT_S * 2.5)  # the outage outlasts two open periods
        client.down = False
        final = await wait_settled(herald, ids, 3600)
        gate = herald.providers[Channel.SMS].gate
        limit = herald.providers[Channel.SMS].max_in_flight

    wall = time.perf_counter() - real_start
    delivered = sum(1 for s in final.values() if s == "delivered")
    failing = [c for c in client.calls if c[2] == "fail"]
    print(f"breaker: sent={len(ids)} delivered={delivered} lost={len(ids) - delivered} calls={len(client.calls)} "
          f"failed_calls={len(failing)} transitions={gate.transitions} simulated_s={trio.current_time() - wall_start:.0f} wall_s={wall:.2f}")
    # the calls started while closed (at least F, at once) all failed; once it opened, the next call waited the timeout
    closed = [c for c in client.calls if c[1] is BreakerState.CLOSED and c[2] == "fail"]
    first_probe = next(c for c in client.calls if c[1] is BreakerState.HALF_OPEN)
    assert len(closed) >= F and client.calls[: len(closed)] == closed
    assert first_probe[0] - closed[-1][0] >= TIMEOUT_S
    # no call ever reached the provider while the breaker was open; many at once, never more than max_in_flight,
    # never two of one user's at once, and none beside a half-open probe (it admits exactly one call)
    assert all(state is not BreakerState.OPEN for _, state, _ in client.calls)
    assert 1 < client.max_in_flight <= limit
    assert not client.same_user_at_once, f"users with two calls at once: {client.same_user_at_once}"
    assert client.beside_a_probe == 0, "a call ran beside a half-open probe"
    # every probe that failed re-opened it; S successes closed it
    assert gate.transitions["half_open->open"] == len(failing) - len(closed)
    assert gate.transitions["half_open->closed"] == 1
    assert gate.breaker.state_at(trio.current_time()) is BreakerState.CLOSED
    ok_calls = [c for c in client.calls if c[2] == "ok"]
    assert [c[1] for c in ok_calls[:S]] == [BreakerState.HALF_OPEN] * S
    assert ok_calls[S][1] is BreakerState.CLOSED
    # and nothing was lost
    assert delivered == len(ids)


async def test_a_provider_down_past_max_attempts_dead_letters_everything_and_replay_delivers_all(tmp_path, clock):
    client = ScriptedSms()
    config = {"limits": limits(open_timeout_s=5.0), "max_attempts": 3, "retry_initial_s": 1, "retry_max_s": 10}
    async with running_node(tmp_path, clients={Channel.SMS: client}, **config) as herald:
        client.provider = herald.providers[Channel.SMS]
        ids = [(await herald.ingress.accept(sms(f"user{i}"))).notification_id for i in range(12)]
        first = await wait_settled(herald, ids, 3600)
        assert set(first.values()) == {"dead_lettered"}, first
        entries = await herald.store.dead_letters(DlqFilter(channel="sms"))
        assert sorted(e.notification_id for e in entries) == sorted(ids)
        assert all(e.attempts == 3 and e.error == "scripted outage" for e in entries)

        client.down = False
        replayed = await herald.gateway.dead_letters.replay(DlqFilter(channel="sms"))
        final = await wait_settled(herald, ids, 3600)
        remaining = await herald.store.dead_letter_count("sms")

    delivered = sum(1 for s in final.values() if s == "delivered")
    print(f"dlq: sent={len(ids)} dead_lettered={len(entries)} replayed={replayed} delivered={delivered} "
          f"lost={len(ids) - delivered} left_in_dlq={remaining}")
    assert replayed == len(ids)
    assert delivered == len(ids)
    assert remaining == 0
