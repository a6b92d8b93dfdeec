"""PartitionConsumer: reads one bus partition in order, hands each record to the channel's
Provider, records the outcomes, and only then commits the offset.

A batch is pipelined: every Attempt of the batch is queued to the Provider in order
(it handles them in order), the outcomes are awaited, recorded in one Recorder call,
and the batch's offsets are committed. A crash anywhere before the commit means the
batch is read again: at-least-once.

Retryable outcomes are retried here with exponential backoff up to `max_attempts`, then
the channel is marked failed. (The Scheduler and dead-letter queue replace this, so that
a waiting message no longer holds up its partition.)

ConsumerGroup follows the bus's assignment stream: it starts a supervised
PartitionConsumer for every assigned partition and stops the revoked ones.
"""

from __future__ import annotations

import logging
import random
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from protocol.channels import Channel
from protocol.lifecycle import Status
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent, StatusEvent, decode_delivery
from reactor.ask import ActorCrashed, Reply, ask
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Bus, Record as BusRecord
from reactor.supervisor import ChildSpec, RestartPolicy, Supervisor

from .clients.web import inbox_entry
from .messages import Attempt, Record

log = logging.getLogger("herald.consumer")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2^(attempt-1))]."""
        return random.uniform(0, min(self.max_s, self.initial_s * 2 ** (attempt - 1)))


class PartitionConsumer:
    def __init__(
        self,
        bus: Bus,
        group: str,
        channel: Channel,
        partition: int,
        provider: Mailbox[Attempt],
        recorder: Mailbox[Record],
        batch: int,
        retry: RetryPolicy,
    ) -> None:
        self.bus = bus
        self.group = group
        self.channel = channel
        self.topic = channel.topic()
        self.partition = partition
        self.provider = provider
        self.recorder = recorder
        self.batch = batch
        self.retry = retry
        self._stopping = trio.Event()
        self._fetch_scope: trio.CancelScope | None = None
        self.processed = 0
        self.undecodable = 0

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return."""
        self._stopping.set()
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        offset = await self.bus.committed(self.group, self.topic, self.partition)
        task_status.started()
        while not self._stopping.is_set():
            records: list[BusRecord] = []
            with trio.CancelScope() as self._fetch_scope:
                if self._stopping.is_set():
                    break
                records = await self.bus.fetch(self.group, self.topic, self.partition, offset, self.batch)
            self._fetch_scope = None
            if not records:
                continue
            await self._process(records)
            offset = records[-1].offset + 1
            await self.bus.commit(self.group, self.topic, self.partition, offset)
            self.processed += len(records)

    async def _process(self, records: list[BusRecord]) -> None:
        deliveries: list[tuple[BusRecord, Delivery]] = []
        for record in records:
            try:
                deliveries.append((record, decode_delivery(record.value)))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                # Nothing to deliver and no id to record it under: log it and move on.
                self.undecodable += 1
                log.error("%s/%d@%d: undecodable record skipped: %s", self.topic, self.partition, record.offset, exc)
        replies: list[Reply[Outcome]] = []
        for _, delivery in deliveries:
            reply: Reply[Outcome] = Reply()
            await self.provider.send(Attempt(delivery, reply))
            replies.append(reply)
        events: list[StatusEvent] = []
        inbox = []
        for (record, delivery), reply in zip(deliveries, replies):
            outcome = await _outcome(reply)
            while isinstance(outcome, RetryLater) and delivery.attempt < self.retry.max_attempts:
                await trio.sleep(outcome.after_s if outcome.after_s is not None else self.retry.delay(delivery.attempt))
                delivery = msgspec.structs.replace(delivery, attempt=delivery.attempt + 1)
                outcome = await _outcome(await _attempt(self.provider, delivery))
            events.extend(self._events(delivery, outcome))
            if self.channel is Channel.WEB and isinstance(outcome, Sent):
                inbox.append(inbox_entry(delivery, record.offset))
        await ask(self.recorder.send, lambda reply: Record(tuple(events), tuple(inbox), reply))

    def _events(self, delivery: Delivery, outcome: Outcome) -> list[StatusEvent]:
        now = wall_ms()

        def event(status: Status, detail: str = "") -> StatusEvent:
            return StatusEvent(
                delivery.notification_id, delivery.user_id, self.channel, status, now,
                detail=detail, created_ms=delivery.created_ms, priority=delivery.priority,
            )

        if isinstance(outcome, Sent):
            if outcome.status is Status.DELIVERED:
                return [event(Status.SENT, f"attempt {delivery.attempt}"), event(Status.DELIVERED, outcome.detail)]
            return [event(outcome.status, outcome.detail)]
        if isinstance(outcome, PermanentFailure):
            return [event(Status.FAILED, outcome.error)]
        return [event(Status.FAILED, f"gave up after {delivery.attempt} attempts: {outcome.error}")]


async def _attempt(provider: Mailbox[Attempt], delivery: Delivery) -> Reply[Outcome]:
    reply: Reply[Outcome] = Reply()
    await provider.send(Attempt(delivery, reply))
    return reply


async def _outcome(reply: Reply[Outcome]) -> Outcome:
    try:
        return await reply.wait()
    except ActorCrashed as exc:
        return RetryLater(str(exc))


class ConsumerGroup:
    """Runs one supervised PartitionConsumer per partition the bus assigns to this member."""

    def __init__(self, bus: Bus, channel: Channel, make: Any, policy: RestartPolicy) -> None:
        self.bus = bus
        self.channel = channel
        self.make = make  # partition -> PartitionConsumer
        self.policy = policy
        self.group = f"herald-{channel.value}"
        self._running: dict[int, tuple[Supervisor, trio.CancelScope, trio.Event]] = {}
        self._stopping = trio.Event()
        self._scope: trio.CancelScope | None = None

    def consumers(self) -> list[Supervisor]:
        return [sup for sup, _, _ in self._running.values()]

    def stop(self) -> None:
        self._stopping.set()
        for supervisor, _, _ in self._running.values():
            supervisor.stop()
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as self._scope:
                started = False
                async with aclosing(self.bus.assignments(self.group, [self.channel.topic()])) as changes:
                    async for change in changes:
                        for _, partition in sorted(change.revoked):
                            await self._revoke(partition)
                        for _, partition in sorted(change.assigned):
                            await nursery.start(self._run_partition, partition)
                        if not started:
                            task_status.started()
                            started = True
            if not started:
                task_status.started()

    async def _run_partition(self, partition: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        consumer = self.make(partition)
        supervisor = Supervisor(
            f"{self.group}/{partition}",
            [ChildSpec(f"partition-{partition}", consumer.run, stop=consumer.stop)],
            self.policy,
        )
        done = trio.Event()
        with trio.CancelScope() as scope:
            self._running[partition] = (supervisor, scope, done)
            try:
                await supervisor.run(task_status=task_status)
            finally:
                done.set()
                self._running.pop(partition, None)

    async def _revoke(self, partition: int) -> None:
        entry = self._running.get(partition)
        if entry is not None:
            supervisor, _, done = entry
            supervisor.stop()
            await done.wait()
