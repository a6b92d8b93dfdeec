"""The PartitionConsumer keeps fetching while a record is out, commits the finished prefix, and after a crash
sends again only what had not finished (actors/consumer.py; the offset tracker is tests/actors/test_offset_tracker.py).

One partition of the embedded bus holds 16 SMS records of 8 users; the consumer (window 8,
fetch 4) feeds a real Provider (max_in_flight 16) whose client holds user 2's first
delivery until told. The others are sent and recorded meanwhile: the consumer fetched past
the held one (up to 8 offsets past its commit: 0-9), and its commit stays at the held offset. Then the node dies (cancelled), and
a new consumer and provider take the partition with the client free: the only records
sent again are the held one and those never fetched; those sent before the crash and
fetched again are suppressed by the send ledger. Every record is recorded.

The same run with a consumer whose tracker commits the high-water mark (the highest
finished offset) loses the held record: it is never sent.

The first run is made in both priority lanes (docs/reliability.md, "Priority lanes"): the
critical lane's consumer, on its own topic, feeding the Provider's critical mailbox, keeps
the same at-least-once, finished-prefix commit of its own.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trio

from actors.consumer import PartitionConsumer, RetryPolicy
from actors.domain.offset_tracker import OffsetTracker
from actors.messages import Attempt, RecordEvents
from actors.provider import Provider
from actors.scheduler import ScheduleAt
from protocol.channels import Channel, Lane, Priority
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, Outcome, Sent, encode_delivery
from reactor.backends.embedded import SqliteStore
from reactor.backends.embedded.bus import EmbeddedBus
from reactor.mailbox import Mailbox
from tests.actors.test_offset_tracker import CommitsPastTheHighestFinished

TOPIC, GROUP = Channel.SMS.topic(), "herald-sms"
TOPICS = {Channel.SMS.topic(lane): 1 for lane in Lane}
HELD = "n02"  # user 2's first delivery: the client holds it until the node dies


class Client:
    def __init__(self, hold: bool) -> None:
        self.sent: list[str] = []
        self.hold = hold
        self.holding = trio.Event()

    async def send(self, delivery: Delivery) -> Outcome:
        if self.hold and delivery.notification_id == HELD:
            self.holding.set()
            await trio.sleep_forever()
        self.sent.append(delivery.notification_id)
        return Sent()


@asynccontextmanager
async def node(directory: Path) -> AsyncIterator[tuple[EmbeddedBus, SqliteStore]]:
    bus = EmbeddedBus(directory / "bus", TOPICS)
    store = SqliteStore(directory / "store.sqlite3")
    await store.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            yield bus, store
            bus.stop()
    finally:
        await store.close()


async def run_worker(bus: EmbeddedBus, store: SqliteStore, client: Client, consumer_class: type[PartitionConsumer],
                     recorded: set[str], until: Any, lane: Lane = Lane.BULK) -> PartitionConsumer:
    """A consumer and a provider of the partition, until `until(consumer)` returns; then cancelled (a crash)."""
    provider_mb: Mailbox[Attempt] = Mailbox("provider:sms", 64)
    critical_mb: Mailbox[Attempt] = Mailbox("provider:sms:critical", 64)
    recorder_mb: Mailbox[RecordEvents] = Mailbox("recorder", 64)
    scheduler_mb: Mailbox[ScheduleAt] = Mailbox("scheduler", 64)
    provider = Provider(Channel.SMS, client, provider_mb, store, max_in_flight=16, critical=critical_mb, critical_reserve=4)
    consumer = consumer_class(bus, GROUP, Channel.SMS, 0, critical_mb if lane is Lane.CRITICAL else provider_mb, recorder_mb,
                              scheduler_mb, store, 4, RetryPolicy(), window=8, lane=lane)

    async def record() -> None:
        async for message in recorder_mb:
            recorded.update(event.notification_id for event in message.events)
            assert message.reply is not None
            message.reply.send(None)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record)
            await nursery.start(provider.run)
            await nursery.start(consumer.run)
            await until(consumer)
            nursery.cancel_scope.cancel()
    return consumer


async def scenario(directory: Path, consumer_class: type[PartitionConsumer], lane: Lane = Lane.BULK) -> dict[str, Any]:
    topic = Channel.SMS.topic(lane)
    priority = Priority.CRITICAL if lane is Lane.CRITICAL else Priority.NORMAL
    async with node(directory) as (bus, store):
        deliveries = [Delivery(f"n{i:02d}", f"user{i % 8}", Channel.SMS, 1000, Content(sms=SmsContent("hi")), address="+15555550100",
                               priority=priority)
                      for i in range(16)]
        await bus.produce([(topic, d.user_id.encode(), encode_delivery(d)) for d in deliveries])
        first, recorded_first = Client(hold=True), set[str]()

        async def held_and_the_rest_of_the_window_recorded(consumer: PartitionConsumer) -> None:
            await first.holding.wait()
            while len(recorded_first) < 9:  # 0-9 but the held one: the commit at 2 left room for 8 and 9
                await trio.sleep(0.01)
            await trio.sleep(0.2)  # a commit in flight lands

        one = await run_worker(bus, store, first, consumer_class, recorded_first, held_and_the_rest_of_the_window_recorded, lane)
        committed = await bus.committed(GROUP, topic, 0)
        other = Channel.SMS.topic(Lane.BULK if lane is Lane.CRITICAL else Lane.CRITICAL)
        assert await bus.committed(GROUP, other, 0) == 0 == await bus.end_offset(other, 0)  # the other lane: untouched
        second, recorded_second = Client(hold=False), set[str]()

        async def all_recorded(consumer: PartitionConsumer) -> None:
            with trio.move_on_after(3):  # a lost record never comes: give up then
                while len(recorded_first | recorded_second) < 16 or await bus.committed(GROUP, topic, 0) < 16:
                    await trio.sleep(0.01)

        two = await run_worker(bus, store, second, consumer_class, recorded_second, all_recorded, lane)
    return dict(one=one, two=two, first=first, second=second, committed=committed, recorded=recorded_first | recorded_second)


@pytest.mark.parametrize("lane", list(Lane), ids=lambda lane: lane.value)
async def test_a_consumer_commits_the_finished_prefix_and_a_crash_sends_only_the_unfinished_again(tmp_path: Path, lane: Lane) -> None:
    r = await scenario(tmp_path, PartitionConsumer, lane)
    first, second = r["first"], r["second"]
    assert r["one"].peak_out == 8, "the consumer did not fetch past the record out"
    assert sorted(first.sent) == [f"n{i:02d}" for i in range(10) if f"n{i:02d}" != HELD]
    assert r["committed"] == 2, "the commit passed the record still out (or stayed behind the finished prefix)"
    # After the crash: the held one and the never-fetched ones are sent; the rest of the window is suppressed (ledger).
    assert sorted(second.sent) == [HELD] + [f"n{i:02d}" for i in range(10, 16)]
    assert r["two"].processed == 14  # 2-15 came again: 2 and 10-15 sent, 3-9 suppressed by the send ledger
    assert r["recorded"] == {f"n{i:02d}" for i in range(16)}


class CommitsTheHighWaterMark(PartitionConsumer):
    tracker = CommitsPastTheHighestFinished


async def test_a_consumer_committing_the_high_water_mark_loses_the_record_out(tmp_path: Path) -> None:
    r = await scenario(tmp_path, CommitsTheHighWaterMark)
    assert r["committed"] > 2
    with pytest.raises(AssertionError):
        assert HELD in r["second"].sent, "the held record was lost"
    assert HELD not in r["recorded"]


def test_the_tracker_is_the_real_one() -> None:
    assert PartitionConsumer.tracker is OffsetTracker
