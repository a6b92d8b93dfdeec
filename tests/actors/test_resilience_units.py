"""Scheduler durability, the send ledger, and the gate's waits, each on its own."""

import time

import trio

from actors.messages import Attempt
from actors.provider import Provider
from actors.scheduler import ScheduleAt, Scheduler
from actors.services.gate import Limits, ResilienceGate
from protocol.channels import Channel
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, RetryLater, Sent
from reactor.ask import Reply, ask
from reactor.backends.embedded import EmbeddedBus, MemoryState, SqliteStore
from reactor.circuit_breaker import BreakerConfig, BreakerState
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Scheduled


def delivery(nid: str = "01J0000000000000000000000A") -> Delivery:
    return Delivery(nid, "u1", Channel.SMS, 0, Content(sms=SmsContent("hi")), address="+15555550100")


async def test_a_pending_retry_survives_a_restart_of_the_scheduler(tmp_path, mock_clock):
    mock_clock.autojump_threshold = 0.03  # the bus and store write in threads: don't leap past them
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    bus = EmbeddedBus(tmp_path / "bus", {"herald.sms": 1})
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        mailbox: Mailbox[ScheduleAt] = Mailbox("scheduler", 8)
        first = Scheduler(bus, store, mailbox, poll_s=None)  # alone on its store
        async with trio.open_nursery() as doomed:
            await doomed.start(first.run)
            entry = Scheduled("retry:x", wall_ms() + 600_000, "herald.sms", b"u1", b"payload")
            await ask(mailbox.send, lambda reply: ScheduleAt(entry, reply))
            doomed.cancel_scope.cancel()  # the node dies with the retry pending
        assert await bus.end_offset("herald.sms", 0) == 0
        second = Scheduler(bus, store, Mailbox("scheduler", 8), poll_s=None)
        await nursery.start(second.run)
        assert [e.id for e in await store.scheduled()] == ["retry:x"] and second.held() == 0  # in the store, not in memory
        await trio.sleep(599)
        assert second.fired == 0  # not before it is due
        with trio.move_on_after(60):
            while second.fired == 0:
                await trio.sleep(0.5)
        assert second.fired == 1
        assert trio.current_time() >= 600
        [record] = await bus.fetch("g", "herald.sms", 0, 0, 10)
        assert record.value == b"payload"
        assert await store.scheduled() == []
        nursery.cancel_scope.cancel()
    await store.close()


class CountingClient:
    def __init__(self):
        self.sent = []

    async def send(self, d):
        self.sent.append(d.notification_id)
        return Sent()


async def test_the_send_ledger_stops_a_second_send_of_a_record_that_may_have_been_sent(tmp_path):
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    client = CountingClient()
    mailbox: Mailbox[Attempt] = Mailbox("p", 8)
    provider = Provider(Channel.SMS, client, mailbox, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run)
        for maybe_sent in (False, True, True):
            reply: Reply = Reply()
            await mailbox.send(Attempt(delivery(), reply, maybe_sent))
            assert isinstance(await reply.wait(), Sent)
        mailbox.close()
    assert client.sent == ["01J0000000000000000000000A"]
    assert provider.suppressed == 2
    assert await store.sent_status("01J0000000000000000000000A", "sms") == "delivered"
    await store.close()


async def test_a_60_s_breaker_timeout_takes_well_under_a_second_of_wall_time(autojump_clock):
    gate = ResilienceGate("sms", Limits(100, 100, BreakerConfig(failure_threshold=2, open_timeout_s=60, success_threshold=1)), MemoryState())
    real_start = time.perf_counter()
    for _ in range(2):
        await gate.admit(delivery())
        await gate.settle(delivery(), RetryLater("down"))
    opened_at = trio.current_time()
    assert gate.breaker.state_at(opened_at) is BreakerState.OPEN
    await gate.admit(delivery())  # waits the whole open timeout, then admits the probe
    waited = trio.current_time() - opened_at
    await gate.settle(delivery(), Sent())
    wall = time.perf_counter() - real_start
    print(f"breaker timeout: simulated {waited:.3f} s in {wall * 1000:.1f} ms of wall time")
    assert waited == 60
    assert gate.breaker.state_at(trio.current_time()) is BreakerState.CLOSED
    assert gate.deferred == 1


async def test_the_bucket_spaces_calls_at_its_refill_rate(autojump_clock):
    gate = ResilienceGate("sms", Limits(capacity=3, refill_per_s=10, breaker=BreakerConfig()), MemoryState())
    times = []
    for _ in range(6):
        await gate.admit(delivery())
        times.append(trio.current_time())
    assert times[:3] == [0, 0, 0]  # the burst
    gaps = [b - a for a, b in zip(times[2:], times[3:])]
    assert all(abs(g - 0.1) < 1e-9 for g in gaps), gaps
    assert gate.throttled == 3


async def test_the_web_channel_pushes_again_instead_of_consulting_the_ledger(tmp_path):
    from protocol.content import WebContent

    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    client = CountingClient()
    mailbox: Mailbox[Attempt] = Mailbox("p", 8)
    provider = Provider(Channel.WEB, client, mailbox, store)
    web = Delivery("01J0000000000000000000000B", "u1", Channel.WEB, 0, Content(web=WebContent("hi")))
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run)
        for maybe_sent in (False, True):
            reply: Reply = Reply()
            await mailbox.send(Attempt(web, reply, maybe_sent))
            await reply.wait()
        mailbox.close()
    assert client.sent == [web.notification_id] * 2  # a session drops the second; a resuming client needs it
    assert provider.suppressed == 0
    await store.close()
