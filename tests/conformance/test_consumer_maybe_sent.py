"""A consumer redelivered after a crash checks the send ledger for every record that may have been attempted,
on every bus, also one whose end offsets lie (actors/consumer.py, PartitionConsumer: the maybe-sent window).

The Kafka-protocol broker used in tests (Tansu) reports wrong end offsets after batched
produces; a consumer that took "below the end offset at start" for "may have been
attempted" sent those records again without asking the ledger. Here the bus answers
end_offset with 0 (and counts the questions): the window must come from the committed
offset and the consumer's window alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio.testing import MockClock

from actors.consumer import PartitionConsumer, RetryPolicy
from actors.messages import Attempt, RecordEvents
from actors.scheduler import ScheduleAt
from protocol.channels import Channel
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, Sent, encode_delivery
from reactor.backends.embedded import SqliteStore
from reactor.mailbox import Mailbox
from tests.conformance.backends import Harness

PORT = "bus"
TOPIC = Channel.SMS.topic()
GROUP = "herald-sms"
BATCH = 4


class LyingEndOffsets:
    """The bus, but end_offset says 0 whatever the partition holds."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.asked = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def end_offset(self, topic: str, partition: int) -> int:
        self.asked += 1
        return 0


@dataclasses.dataclass
class Run:
    """What one run of a PartitionConsumer showed: (offset, maybe_sent) of each attempt, in order."""

    attempts: list[tuple[int, bool]] = dataclasses.field(default_factory=list)
    recorded: set[str] = dataclasses.field(default_factory=set)  # notification ids whose outcome the Recorder took


async def consume(bus: Any, store: SqliteStore, offsets: dict[str, int], *, answer: int, stop_after: int) -> Run:
    """Run a consumer of the partition (its window: BATCH) until `stop_after` records were attempted and the outcomes of
    the first `answer` of them recorded (the Provider answers those only; the rest stay out), then cancel it: a crash."""
    run = Run()
    provider: Mailbox[Attempt] = Mailbox("provider", 64)
    recorder: Mailbox[RecordEvents] = Mailbox("recorder", 64)
    scheduler: Mailbox[ScheduleAt] = Mailbox("scheduler", 64)
    consumer = PartitionConsumer(bus, GROUP, Channel.SMS, 0, provider, recorder, scheduler, store, BATCH, RetryPolicy(), window=BATCH)
    changed = trio.Event()

    async def provide() -> None:
        nonlocal changed
        async for attempt in provider:
            run.attempts.append((offsets[attempt.delivery.notification_id], attempt.maybe_sent))
            if len(run.attempts) <= answer:
                attempt.reply.send(Sent())
            changed.set()

    async def record() -> None:
        async for message in recorder:
            run.recorded.update(event.notification_id for event in message.events)
            assert message.reply is not None
            message.reply.send(None)
            changed.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(provide)
            nursery.start_soon(record)
            await nursery.start(consumer.run)
            while len(run.attempts) < stop_after or len(run.recorded) < answer:
                await changed.wait()
                changed = trio.Event()
            await trio.sleep(0.1)  # time for a commit of what was recorded to land
            nursery.cancel_scope.cancel()  # the process dies: what is out is not committed
    return run


@asynccontextmanager
async def ledger(directory: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(directory / "store.sqlite3")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_redelivered_batch_is_maybe_sent_whatever_the_end_offsets_say(harness: Harness[Any], clock: MockClock) -> None:
    h = Harness(harness.backend, harness.factory, dataclasses.replace(harness.place, topics={TOPIC: 1}))
    async with h.open() as real, ledger(h.place.directory) as store:
        bus = LyingEndOffsets(real)
        deliveries = [Delivery(f"n{i:02d}", "u1", Channel.SMS, 1000, Content(sms=SmsContent("hi")), address="+15555550100")
                      for i in range(14)]
        acks = await bus.produce([(TOPIC, b"u1", encode_delivery(d)) for d in deliveries])
        offsets = {d.notification_id: offset for d, (_, offset) in zip(deliveries, acks)}
        first = min(offsets.values())

        # The first run ever: its first window is maybe-sent (an earlier owner may have had it), the next window not.
        # It records two windows, then dies with its third attempted and not committed.
        one = await consume(bus, store, offsets, answer=2 * BATCH, stop_after=3 * BATCH)
        assert [o for o, _ in one.attempts] == sorted(offsets.values())[: 3 * BATCH]
        assert await bus.committed(GROUP, TOPIC, 0) == first + 2 * BATCH
        assert [m for _, m in one.attempts[:BATCH]] == [True] * BATCH
        assert [m for _, m in one.attempts[BATCH : 2 * BATCH]] == [False] * BATCH

        # Redelivered: every record of the batch in hand when it died may have been sent: each is checked in the ledger.
        two = await consume(bus, store, offsets, answer=BATCH, stop_after=BATCH)
        attempted_before = {o for o, _ in one.attempts[2 * BATCH:]}
        redelivered = [(o, m) for o, m in two.attempts if o in attempted_before]
        assert [o for o, _ in redelivered] == sorted(attempted_before), "the uncommitted batch did not come again"
        assert all(m for _, m in redelivered), f"records attempted before the crash, not checked in the ledger: {redelivered}"
        assert bus.asked == 0, "the consumer asked for end offsets"
