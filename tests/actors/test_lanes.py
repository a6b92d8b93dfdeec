"""Priority lanes (issue 10 item 6; docs/reliability.md, "Priority lanes").

critical and high travel in a channel's critical lane (topic herald.<channel>.critical),
normal and low in its bulk lane (herald.<channel>). Checked here: the mapping; a send, a
retry, a quiet-hours hold and a dead-letter replay each stay in their priority's lane; the
status shows each channel's priority and lane; the Provider attempts a critical arrival
before a bulk backlog drains and never lets bulk take the slots reserved for critical; the
gate's bulk lane stops at the token reserve while critical takes the last tokens; and a
node with a blocked bulk backlog still attempts a critical send at once. Precedence is
asserted on the order of attempts, never on time (speed goals: loadtests/lanes_bench.py).
The consumer's crash and restart per lane: tests/actors/test_consumer_pipeline.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from actors.api.notifications import DECODE_SLICE, _submit_batch, batch_items
from actors.config import ConfigError, load_config
from actors.consumer import HAND_OUT_SLICE, PartitionConsumer, RetryPolicy
from actors.fanout import Fanout
from actors.ingress import PLAN_SLICE, Ingress, SendPlanner
from actors.messages import Attempt, IngressMessage, RecorderMessage, Submit, SubmitBatch
from actors.provider import Provider
from actors.scheduler import ScheduleAt
from actors.services.gate import GateSettings, Limits, ResilienceGate
from protocol.api import NotificationRequest, Receipt
from protocol.channels import Channel, Lane, Priority
from protocol.content import Content, SmsContent
from protocol.ids import make_notification_id
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent, encode_delivery
from protocol.problems import Problem
from reactor.ask import Reply
from reactor.backends.embedded import EmbeddedBus, MemoryState, SqliteStore
from reactor.circuit_breaker import BreakerConfig
from reactor.mailbox import Mailbox
from tests.actors.test_dead_letter_api import job_done
from tests.actors.test_ingress_coalesce import RecordingBus, serve_recorder
from tests.helpers import MemoryLedger, config_for, http, running_node, wait_final
from tests.users.test_quiet_hours_check import night_owl_in_quiet_hours, notification


def sms(user: str, priority: str = "normal") -> dict[str, Any]:
    return {"user_id": user, "channels": ["sms"], "content": {"sms": {"text": "code 1234"}}, "to": {"phone": "+15555550100"},
            "priority": priority}


async def offsets(herald: Any, channel: Channel) -> dict[Lane, int]:
    """Records on each lane's topic of the channel (every partition)."""
    return {
        lane: sum([await herald.bus.end_offset(channel.topic(lane), p) for p in range(herald.config.partitions_of(channel))])
        for lane in Lane
    }


# -- the mapping ---------------------------------------------------------------------------------


def test_critical_and_high_take_the_critical_lane_normal_and_low_the_bulk_lane(tmp_path) -> None:
    assert {p: p.lane for p in Priority} == {
        Priority.CRITICAL: Lane.CRITICAL, Priority.HIGH: Lane.CRITICAL, Priority.NORMAL: Lane.BULK, Priority.LOW: Lane.BULK,
    }
    assert Channel.SMS.topic() == Channel.SMS.topic(Lane.BULK) == "herald.sms"  # the bulk lane keeps the channel's topic
    assert Channel.SMS.topic(Lane.CRITICAL) == "herald.sms.critical"
    config = config_for(tmp_path)
    topics = config.backend_settings().topics
    assert {t: topics[t] for t in topics} == {
        c.topic(lane): config.partitions_of(c) for c in Channel for lane in Lane
    }  # every lane of every channel is on the bus, with the channel's partitions
    # the embedded bus appends the critical lanes by a group commit of their own (tests/reactor/test_bus_embedded.py)
    assert config.backend_settings().priority_topics == {c.topic(Lane.CRITICAL) for c in Channel}


def test_the_reserves_are_settings_with_bounds(tmp_path) -> None:
    config = config_for(tmp_path, provider_max_in_flight={"sms": 8, "web": 1}, lane_reserve_in_flight=0.25,
                        lane_reserve_tokens=0.5, limits={"sms": {"capacity": 10}})
    assert config.critical_slots_of(Channel.SMS) == 2
    assert config.critical_slots_of(Channel.WEB) == 0  # one slot: bulk keeps it
    assert config.critical_tokens_of(Channel.SMS) == 5
    # bulk always has a whole token above the reserve: a bucket of 2.5 with a share of 0.9 reserves 1, not 2
    tight = config_for(tmp_path, lane_reserve_tokens=0.9, limits={"sms": {"capacity": 2.5}})
    assert tight.critical_tokens_of(Channel.SMS) == 1
    limits = Limits(2.5, 1.0, BreakerConfig())
    ResilienceGate("sms", limits, MemoryState(), critical_reserve=1)
    with pytest.raises(ValueError, match="critical_reserve"):
        ResilienceGate("sms", limits, MemoryState(), critical_reserve=2)  # bulk would wait for ever
    assert load_config(env={"HERALD_LANE_RESERVE_IN_FLIGHT": "0.9"}).critical_slots_of(Channel.WEB) == 57
    for name, value in (("lane_reserve_in_flight", "1"), ("lane_reserve_tokens", "-0.1"), ("lane_reserve_tokens", "1.5")):
        with pytest.raises(ConfigError, match=f"HERALD_{name.upper()}: expected a number from 0 to below 1"):
            load_config(env={f"HERALD_{name.upper()}": value})


# -- each send, retry, hold and replay in its lane --------------------------------------------


class FailsFirst:
    """RetryLater on each notification's first attempt, Sent on the next."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def send(self, delivery: Delivery) -> Outcome:
        if delivery.notification_id not in self.seen:
            self.seen.add(delivery.notification_id)
            return RetryLater("try again")
        return Sent()


async def test_sends_and_their_retries_keep_their_lane_and_the_status_shows_it(tmp_path) -> None:
    async with running_node(tmp_path, clients={Channel.SMS: FailsFirst()}) as herald, http(herald) as client:
        high = (await client.post("/v1/notifications", json=sms("alice", "high"))).json()["notification_id"]
        low = (await client.post("/v1/notifications", json=sms("bob", "low"))).json()["notification_id"]
        for nid, priority, lane in ((high, "high", "critical"), (low, "low", "bulk")):
            body = await wait_final(client, nid)
            channel = body["channels"]["sms"]
            assert channel["status"] == "delivered" and "attempt 2" in str(channel["attempts"]), channel
            assert (body["priority"], channel["priority"], channel["lane"]) == (priority, priority, lane)
        # each one: its first record, and its retry produced by the Scheduler, on its own lane's topic
        assert await offsets(herald, Channel.SMS) == {Lane.CRITICAL: 2, Lane.BULK: 2}


class Refuses:
    """Refuses the content until told otherwise: dead-lettered at once (a poison message)."""

    refuse = True

    async def send(self, delivery: Delivery) -> Outcome:
        return PermanentFailure("refused", dead_letter=True) if self.refuse else Sent()


async def test_a_dead_letter_replay_keeps_its_lane(tmp_path) -> None:
    refusing = Refuses()
    async with running_node(tmp_path, clients={Channel.SMS: refusing}) as herald, http(herald) as client:
        nid = (await client.post("/v1/notifications", json=sms("carol", "critical"))).json()["notification_id"]
        assert (await wait_final(client, nid))["channels"]["sms"]["status"] == "dead_lettered"
        refusing.refuse = False
        job = await job_done(client, "POST", "/v1/admin/dlq/replay", {"notification_id": nid})
        assert job["replayed"] == 1
        body = await wait_final(client, nid)
        assert body["channels"]["sms"]["status"] == "delivered" and body["channels"]["sms"]["lane"] == "critical"
        assert await offsets(herald, Channel.SMS) == {Lane.CRITICAL: 2, Lane.BULK: 0}


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03  # as tests/users/test_quiet_hours_check.py
    return mock_clock


async def test_quiet_hours_hold_a_delivery_in_its_lane(tmp_path, clock) -> None:
    async with running_node(tmp_path) as herald:
        await night_owl_in_quiet_hours(herald)
        ids = {}
        for priority in (Priority.HIGH, Priority.LOW):  # critical is never held by quiet hours; high is
            receipt = await herald.ingress.accept(notification(priority))
            assert not isinstance(receipt, Problem)
            ids[receipt.notification_id] = priority.lane
        held = await herald.store.scheduled()
        assert sorted((e.id, e.topic) for e in held) == sorted(
            (f"quiet:{nid}:{c.value}", c.topic(lane)) for nid, lane in ids.items() for c in (Channel.SMS, Channel.PUSH)
        )


# -- the Provider: a critical arrival goes before the bulk backlog, bulk leaves the reserved slots --------


class Recording:
    """Each call takes one simulated second; records the order of calls and the most bulk calls at once."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.bulk_now = self.bulk_peak = self.now = self.peak = 0

    async def send(self, delivery: Delivery) -> Outcome:
        bulk = delivery.priority.lane is Lane.BULK
        self.started.append(delivery.notification_id)
        self.bulk_now += bulk
        self.now += 1
        self.bulk_peak, self.peak = max(self.bulk_peak, self.bulk_now), max(self.peak, self.now)
        try:
            await trio.sleep(1)
        finally:
            self.bulk_now -= bulk
            self.now -= 1
        return Sent()


class BatchRecording(Recording):
    """The same, for a client that takes batches (the Provider then serves a batch of users per task)."""

    sends_many = True

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        bulk = sum(d.priority.lane is Lane.BULK for d in deliveries)
        self.started.extend(d.notification_id for d in deliveries)
        self.bulk_now += bulk
        self.now += len(deliveries)
        self.bulk_peak, self.peak = max(self.bulk_peak, self.bulk_now), max(self.peak, self.now)
        try:
            await trio.sleep(1)
        finally:
            self.bulk_now -= bulk
            self.now -= len(deliveries)
        return [Sent() for _ in deliveries]


CLIENTS = {"per-user-task": Recording, "batches": BatchRecording}


def attempt(nid: str, user: str, priority: Priority) -> tuple[Attempt, Reply[Outcome]]:
    reply: Reply[Outcome] = Reply()
    delivery = Delivery(nid, user, Channel.SMS, 0, Content(sms=SmsContent("hi")), address="+15555550100", priority=priority)
    return Attempt(delivery, reply, maybe_sent=False), reply


async def provider_run(client: Recording, reserve: int, bulk: int = 40, max_in_flight: int = 4) -> list[str]:
    """A bulk backlog of `bulk` attempts (one user each), and half a second in, one critical attempt and one more bulk
    attempt of a user who already has one queued (per-user order holds per lane, not across lanes)."""
    bulk_mb: Mailbox[Attempt] = Mailbox("provider:sms", bulk + 8)
    critical_mb: Mailbox[Attempt] = Mailbox("provider:sms:critical", 8)
    provider = Provider(Channel.SMS, client, bulk_mb, MemoryLedger(), max_in_flight=max_in_flight, critical=critical_mb,
                        critical_reserve=reserve)
    replies = []
    for n in range(bulk):
        a, reply = attempt(f"bulk{n:03d}", f"user{n}", Priority.NORMAL)
        replies.append(reply)
        await bulk_mb.send(a)
    with trio.fail_after(bulk * 2 + 10):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run)
            await trio.sleep(0.5)
            a, reply = attempt("critical", f"user{bulk - 1}", Priority.CRITICAL)  # a user with bulk queued: not behind it
            replies.append(reply)
            await critical_mb.send(a)
            for reply in replies:
                assert isinstance(await reply.wait(), Sent)
            bulk_mb.close()
            critical_mb.close()
    assert not provider._queues and provider.in_flight == 0
    return client.started


@pytest.mark.parametrize("kind", CLIENTS)
async def test_a_critical_arrival_is_attempted_before_the_bulk_backlog_drains(autojump_clock, kind: str) -> None:
    client = CLIENTS[kind]()
    started = await provider_run(client, reserve=1)
    # 3 bulk calls run (max_in_flight 4, one slot reserved); the critical one takes the reserved slot as it arrives
    assert started.index("critical") == 3, started[:8]
    assert client.bulk_peak == 3 and client.peak == 4


@pytest.mark.parametrize("kind", CLIENTS)
async def test_without_a_reserve_the_critical_arrival_still_passes_the_queued_backlog(autojump_clock, kind: str) -> None:
    client = CLIENTS[kind]()
    started = await provider_run(client, reserve=0)
    # all 4 slots run bulk: the critical one waits for the first free slot, not for the 36 bulk attempts taken behind them
    assert client.bulk_peak == 4
    assert started.index("critical") <= 2 * 4, started[:12]


@pytest.mark.parametrize("kind", CLIENTS)
async def test_bulk_never_takes_the_reserved_slots(autojump_clock, kind: str) -> None:
    client = CLIENTS[kind]()
    await provider_run(client, reserve=3, bulk=20, max_in_flight=4)
    assert client.bulk_peak == 1  # max_in_flight 4, 3 reserved for critical


def test_a_reserve_leaves_bulk_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="critical_reserve"):
        Provider(Channel.SMS, Recording(), Mailbox("p", 1), MemoryLedger(), max_in_flight=2, critical_reserve=2)


class ReadersLedger(MemoryLedger):
    """A send ledger read through two readers taken in arrival order (as the embedded Store's); a read takes a second."""

    def __init__(self) -> None:
        super().__init__()
        self.readers = trio.Semaphore(2)
        self.served: list[str] = []  # notification ids in the order their lookup got a reader

    async def sent_status(self, notification_id: str, channel: str) -> str | None:
        async with self.readers:
            self.served.append(notification_id)
            await trio.sleep(1)
            return await super().sent_status(notification_id, channel)


@pytest.mark.parametrize("kind", CLIENTS)
async def test_a_critical_send_ledger_lookup_is_not_queued_behind_the_bulk_lanes(autojump_clock, kind: str) -> None:
    """After a start every record of a lane's first window is maybe-sent: each attempt reads the send ledger first."""
    ledger = ReadersLedger()
    bulk_mb: Mailbox[Attempt] = Mailbox("provider:sms", 64)
    critical_mb: Mailbox[Attempt] = Mailbox("provider:sms:critical", 8)
    provider = Provider(Channel.SMS, CLIENTS[kind](), bulk_mb, ledger, max_in_flight=16, critical=critical_mb, critical_reserve=4)
    replies = []
    for n in range(24):
        a, reply = attempt(f"bulk{n:03d}", f"user{n}", Priority.NORMAL)
        replies.append(reply)
        await bulk_mb.send(Attempt(a.delivery, reply, maybe_sent=True))
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run)
            await trio.sleep(0.5)  # 12 bulk attempts run (16 slots, 4 reserved), each looking its delivery up
            a, reply = attempt("critical", "someone", Priority.CRITICAL)
            replies.append(reply)
            await critical_mb.send(Attempt(a.delivery, reply, maybe_sent=True))
            for reply in replies:
                assert isinstance(await reply.wait(), Sent)
            bulk_mb.close()
            critical_mb.close()
    # the two bulk lookups being served, then the critical one (not the 13th, behind every bulk attempt running); a
    # batch looks its attempts up one after another, so one bulk lookup is out when the critical one comes
    assert ledger.served.index("critical") == (2 if kind == "per-user-task" else 1), ledger.served[:6]


# -- the gate: bulk stops at the token reserve, critical takes the last tokens --------------------------


async def test_bulk_stops_at_the_token_reserve_and_critical_takes_the_last_tokens(autojump_clock) -> None:
    state = MemoryState()
    limits = Limits(10.0, 1.0, BreakerConfig())
    settings = GateSettings(slice_s=1.0, lease_s=60.0)  # slices of one token: what each worker holds is what it spent
    bulk_gate = ResilienceGate("sms", limits, state, settings, owner="w1", critical_reserve=4)
    other = ResilienceGate("sms", limits, state, settings, owner="w2", critical_reserve=4)  # a second worker of the provider
    normal, critical = attempt("b", "u", Priority.NORMAL)[0].delivery, attempt("c", "u", Priority.CRITICAL)[0].delivery
    admitted: list[tuple[str, float]] = []

    async def admit(gate: ResilienceGate, delivery: Delivery, name: str) -> None:
        await gate.admit(delivery)
        admitted.append((name, trio.current_time()))

    for n in range(6):  # 10 tokens, 4 reserved: 6 for bulk, across both workers
        await admit(bulk_gate if n % 2 else other, normal, f"bulk{n}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admit, bulk_gate, normal, "bulk6")  # waits: the rest is the reserve
        nursery.start_soon(admit, other, normal, "bulk7")
        await trio.lowlevel.checkpoint()
        for n in range(4):  # critical takes the reserve at once, on either worker, while bulk waits
            await admit(other if n % 2 else bulk_gate, critical, f"critical{n}")
    names = [name for name, _ in admitted]
    assert names[:10] == [f"bulk{n}" for n in range(6)] + [f"critical{n}" for n in range(4)]
    assert all(at == 0 for _, at in admitted[:10])
    assert {name for name, _ in admitted[10:]} == {"bulk6", "bulk7"} and all(at > 0 for _, at in admitted[10:])
    # the bulk ones waited for the refill to lift the bucket above the reserve again (1 token a second)
    assert min(at for _, at in admitted[10:]) >= 5.0 - 1e-6


# -- a whole node: a blocked bulk backlog does not hold up a critical send ------------------------------


class BulkWaitsForCritical:
    """Holds every bulk call until a critical one has been made (or 20 s pass: then the order shows the failure)."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.critical_seen = trio.Event()

    async def send(self, delivery: Delivery) -> Outcome:
        self.order.append(delivery.priority.value)
        if delivery.priority.lane is Lane.CRITICAL:
            self.critical_seen.set()
        else:
            with trio.move_on_after(20):
                await self.critical_seen.wait()
        return Sent()


async def test_a_node_attempts_a_critical_send_while_a_bulk_batch_is_stuck(tmp_path) -> None:
    client_impl = BulkWaitsForCritical()
    settings = {"provider_max_in_flight": {"sms": 4}, "partitions": {"sms": 1}}
    async with running_node(tmp_path, clients={Channel.SMS: client_impl}, **settings) as herald, http(herald) as client:
        batch = await client.post("/v1/notifications/batch", json={"items": [sms(f"bulk{n}") for n in range(200)]})
        assert batch.status_code == 202, batch.text
        with trio.fail_after(10):
            while len(client_impl.order) < 3:  # the bulk lane's 3 slots (one of 4 reserved) are taken, and stuck
                await trio.sleep(0.01)
        nid = (await client.post("/v1/notifications", json=sms("alice", "critical"))).json()["notification_id"]
        body = await wait_final(client, nid)
        assert body["channels"]["sms"]["status"] == "delivered"
        assert client_impl.order.index("critical") == 3, client_impl.order[:10]  # before the 197 bulk ones still waiting


# -- the Ingress: critical first among what waits, a batch planned in slices ----------------------------


def lane_request(user: str, priority: str) -> NotificationRequest:
    body = {"user_id": user, "channels": ["web"], "content": {"web": {"title": "t", "body": "b"}}, "priority": priority}
    return msgspec.convert(body, NotificationRequest)


class TickingBus(RecordingBus):
    """RecordingBus that also notes, per append, how often a probe task had run by then."""

    def __init__(self, ticks: list[int]) -> None:
        super().__init__()
        self.ticks = ticks
        self.ticks_at_append: list[int] = []

    async def produce(self, items: list[tuple[str, bytes, bytes]]) -> list[int]:
        self.ticks_at_append.append(self.ticks[0])
        return await super().produce(items)


async def test_a_critical_post_waiting_with_bulk_batches_is_appended_and_answered_before_them() -> None:
    bus = RecordingBus()
    inbox: Mailbox[IngressMessage] = Mailbox("ingress", 100)
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 100)
    ingress = Ingress(bus, inbox, recorder, workers=1)  # type: ignore[arg-type]
    answered: list[str] = []
    bulk = [Reply[list[Receipt | Problem]]() for _ in range(3)]
    for n, reply in enumerate(bulk):
        await inbox.send(SubmitBatch(tuple(lane_request(f"bulk-{n}-{i}", "normal") for i in range(10)), reply))
    critical = Reply[Receipt | Problem]()
    await inbox.send(Submit(lane_request("otp", "critical"), critical))  # behind 30 bulk items in the mailbox

    async def note(name: str, reply: Reply[Any]) -> None:
        await reply.wait()
        answered.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_recorder, recorder, [])
        for n, reply in enumerate(bulk):
            nursery.start_soon(note, f"bulk-{n}", reply)
        nursery.start_soon(note, "otp", critical)
        await nursery.start(ingress.run)
        while len(answered) < 4:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # the critical request is the first append, alone (it was the 31st record of one append, behind the bulk)
    assert [[key.decode() for _, key, _ in call] for call in bus.calls][0] == ["otp"]
    assert bus.calls[0][0][0] == Channel.WEB.topic(Lane.CRITICAL)
    assert sum(len(call) for call in bus.calls) == 31  # the bulk all appended too, after it
    assert answered[0] == "otp"


async def test_the_ingress_plans_a_large_batch_in_slices_letting_other_tasks_run_between() -> None:
    ticks = [0]
    bus = TickingBus(ticks)
    inbox: Mailbox[IngressMessage] = Mailbox("ingress", 100)
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 100)
    ingress = Ingress(bus, inbox, recorder, workers=1)  # type: ignore[arg-type]
    reply = Reply[list[Receipt | Problem]]()

    async def probe() -> None:  # runs once per turn of the scheduler
        while True:
            ticks[0] += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_recorder, recorder, [])
        await nursery.start(ingress.run)
        nursery.start_soon(probe)
        await trio.lowlevel.checkpoint()
        before = ticks[0]
        await inbox.send(SubmitBatch(tuple(lane_request(f"bulk-{i}", "normal") for i in range(1000)), reply))
        receipts = await reply.wait()
        nursery.cancel_scope.cancel()
    assert all(isinstance(r, Receipt) for r in receipts) and len(bus.calls) == 1
    # the probe ran between the slices of the plan (1000 / PLAN_SLICE of them): it ran about twice in the old one-go plan
    assert bus.ticks_at_append[0] - before >= 1000 // PLAN_SLICE - 2


async def test_the_batch_route_decodes_a_large_batch_in_slices_letting_other_tasks_run_between() -> None:
    """POST /v1/notifications/batch's decode and check of 1,000 items (issue 10 item 6): other tasks run between its
    slices before the batch reaches the Ingress, where the route decoded them all in one step of the loop."""
    ingress: Mailbox[IngressMessage] = Mailbox("ingress", 10)
    gw = SimpleNamespace(max_body_bytes=65_536, ingress=ingress, console=SimpleNamespace(note_accepted_many=lambda *a: None))
    body = json.dumps({"items": [{"user_id": f"bulk-{i}", "channels": ["web"], "content": {"web": {"title": "t", "body": "b"}}}
                                 for i in range(1000)]}).encode()
    ticks = [0]
    ticks_at_ingress: list[int] = []

    async def probe() -> None:
        while True:
            ticks[0] += 1
            await trio.lowlevel.checkpoint()

    async def fake_ingress() -> None:
        async for message in ingress:
            assert isinstance(message, SubmitBatch)
            ticks_at_ingress.append(ticks[0])
            message.reply.send([Receipt(notification_id=make_notification_id(1_704_067_200_000, i)) for i in range(len(message.requests))])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_ingress)
        nursery.start_soon(probe)
        await trio.lowlevel.checkpoint()
        before = ticks[0]
        answer = await _submit_batch(gw, batch_items(body), None)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
    assert answer.status == 202
    assert ticks_at_ingress[0] - before >= 1000 // DECODE_SLICE - 2


class TickingMailbox(Mailbox[Attempt]):
    """The Provider's mailbox, noting how often a probe task had run by each attempt handed over."""

    def __init__(self, ticks: list[int]) -> None:
        super().__init__("provider", 2048)
        self.ticks = ticks
        self.at: list[int] = []

    def offer(self, message: Attempt) -> bool:
        self.at.append(self.ticks[0])
        return super().offer(message)


async def test_the_consumer_hands_out_a_large_fetch_in_slices_letting_other_tasks_run_between(tmp_path) -> None:
    """512 records fetched at once (issue 10 item 6): decoded and handed to the Provider a slice at a time, other
    tasks running between, where the whole fetch was handed out in one step of the loop."""
    topic = Channel.SMS.topic()
    bus = EmbeddedBus(tmp_path / "bus", {topic: 1})
    store = SqliteStore(tmp_path / "store.sqlite3")
    ticks = [0]
    provider = TickingMailbox(ticks)
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 64)
    scheduler: Mailbox[ScheduleAt] = Mailbox("scheduler", 64)

    async def probe() -> None:
        while True:
            ticks[0] += 1
            await trio.lowlevel.checkpoint()

    await store.open()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(bus.run)
                deliveries = [Delivery(f"n{i:03d}", f"u{i}", Channel.SMS, 1000, Content(sms=SmsContent("hi")), address="+15555550100")
                              for i in range(512)]
                await bus.produce([(topic, d.user_id.encode(), encode_delivery(d)) for d in deliveries])
                consumer = PartitionConsumer(bus, "herald-sms", Channel.SMS, 0, provider, recorder, scheduler, store, 512,
                                             RetryPolicy(), window=1024)
                nursery.start_soon(probe)
                await nursery.start(consumer.run)
                while len(provider.at) < 512:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    finally:
        await store.close()
    assert provider.at[-1] - provider.at[0] >= 512 // HAND_OUT_SLICE - 2


async def test_the_fanout_plans_a_page_of_subscribers_in_slices_letting_other_tasks_run_between() -> None:
    """A topic fan-out's page of 500 subscribers (issue 10 item 6): other tasks run between the slices of its plan,
    where the page was planned in one step of the loop."""
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 10)
    fanout = Fanout(None, SendPlanner(RecordingBus(), recorder), batch=500)  # type: ignore[arg-type]  # the page needs no Store
    ticks = [0]
    before: list[int] = []

    async def probe() -> None:
        while True:
            ticks[0] += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.lowlevel.checkpoint()
        before.append(ticks[0])
        planned = await fanout._plan_page(SimpleNamespace(id=make_notification_id(1_704_067_200_000, 7)), lane_request("x", "normal"),  # type: ignore[arg-type]
                                          [f"sub-{i}" for i in range(500)], False)
        nursery.cancel_scope.cancel()
    assert len(planned.items) == 500
    assert ticks[0] - before[0] >= 500 // PLAN_SLICE - 2
