"""PartitionConsumer: reads one bus partition in order, hands each record to the channel's
Provider, records the outcomes, and only then commits the offset.

A batch is pipelined: every Attempt of the batch is queued to the Provider in order
(it handles them in order), the outcomes are awaited, recorded in one Recorder call,
and the batch's offsets are committed. A crash anywhere before the commit means the
batch is read again: at-least-once.

A retryable outcome is handed to the Scheduler (durably) with its next attempt due
after an exponential backoff with full jitter, so the partition keeps flowing while it
waits. After `max_attempts` the record goes to the channel's dead-letter queue with its
last error and attempt history. A permanent failure fails the channel at once, unless
the client refused the delivery's content (`dead_letter`): then it is dead-lettered at
once. A delivery that crashed the client (Crashed) or the provider (ActorCrashed) is
retried once; the second crash dead-letters it as a poison message.

Consent is checked again when a record that waited goes out (actors.domain.preferences
`waited`: held by quiet hours, retried, replayed; fresh records are not, the hot path
stays as it was): the user's profile is read through the UserDirectory (cached; every
preferences write invalidates it) and `check_at_fire` decides. A record no longer
allowed is recorded failed with the reason and never reaches the Provider (unless the
send ledger says an earlier run sent it: then the Provider answers "already sent");
one in quiet hours now goes back to the Scheduler; one whose addresses came from the
preferences goes to the contact point or devices the user has now.

The dead-letter queue holds one entry per (notification, channel). A record that may
have been attempted before (a redelivery after a restart, a retry, a replay) and
succeeds resolves the entry an earlier run may have left; one already sent (send
ledger) is never dead-lettered.

Which records may have been attempted before (`maybe_sent`: the Provider then asks the
send ledger first) is decided from the committed offset alone, never from the bus's end
offset (which a Kafka-protocol broker may report wrong: Tansu does after batched
produces). The argument: a consumer of the group attempts a batch of at most `batch`
records fetched from its committed offset (the bus never returns more than asked), and
fetches the next one only after committing this one, durably. So when a consumer starts
on a partition (at start-up, after a crash, or when the partition is assigned to it),
every record an earlier owner attempted without committing lies in the first window,
[committed, committed + batch): only those are maybe-sent, plus any record that waited
(a retry, a replay, one held by quiet hours). This holds as long as no member of the
group ran with a larger batch since the last commit: lower `consumer_batch` only after
a clean stop (which commits what is in hand), not across a crash.

ConsumerGroup follows the bus's assignment stream: it starts a supervised
PartitionConsumer for every assigned partition and stops the revoked ones.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

import msgspec
import trio

from protocol.channels import Channel
from protocol.lifecycle import Status
from protocol.messages import (
    AttemptRecord,
    Crashed,
    Delivery,
    Outcome,
    PermanentFailure,
    Sent,
    StatusEvent,
    decode_delivery,
    encode_delivery,
)
from reactor.ask import ActorCrashed, Reply, ask
from reactor.clock import iso, wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Bus, BusRecord, DeadLetter, Scheduled, Store
from reactor.supervisor import ChildSpec, RestartPolicy, Supervisor

from .clients.web import inbox_entry
from .domain.preferences import FireCheck, check_at_fire, waited
from .messages import Attempt, RecordEvents, RecorderMessage
from .scheduler import ScheduleAt
from .services.user_directory import UserDirectory

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
        recorder: Mailbox[RecorderMessage],
        scheduler: Mailbox[ScheduleAt],
        store: Store,
        batch: int,
        retry: RetryPolicy,
        users: UserDirectory | None = None,
    ) -> None:
        self.bus = bus
        self.group = group
        self.channel = channel
        self.topic = channel.topic()
        self.partition = partition
        self.provider = provider
        self.recorder = recorder
        self.scheduler = scheduler
        self.store = store
        self.batch = batch
        self.retry = retry
        self.users = users  # None: no preferences, nothing to check again when a record that waited goes out
        self._stopping = trio.Event()
        self._fetch_scope: trio.CancelScope | None = None
        self._maybe_sent_below = 0  # records below this offset may have been attempted by an earlier owner (see above)
        self.processed = 0
        self.undecodable = 0
        self.retried = 0
        self.dead_lettered = 0
        self.stopped_at_fire = 0  # records that waited and were no longer allowed when they went out
        self.held_at_fire = 0  # records that waited and met quiet hours when they went out

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return."""
        self._stopping.set()
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        offset = await self.bus.committed(self.group, self.topic, self.partition)
        # The first window: what an earlier owner of the partition may have attempted without committing.
        self._maybe_sent_below = offset + self.batch
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
        # A record that waited meets the user's preferences as they are now (fresh ones were just planned).
        stopped: dict[int, FireCheck] = {}  # index in deliveries -> skipped or held again: not for the provider
        if self.users is not None:
            for i, (record, delivery) in enumerate(deliveries):
                if waited(delivery):
                    check = await self._check_at_fire(delivery)
                    if check.skip is not None or check.hold_until_ms is not None:
                        stopped[i] = check
                    else:
                        deliveries[i] = (record, check.delivery)
        replies: list[tuple[Reply[Outcome] | None, bool]] = []
        for i, (record, delivery) in enumerate(deliveries):
            if i in stopped:
                replies.append((None, False))
                continue
            reply: Reply[Outcome] = Reply()
            maybe_sent = record.offset < self._maybe_sent_below or waited(delivery)
            await self.provider.send(Attempt(delivery, reply, maybe_sent))
            replies.append((reply, maybe_sent))
        outcomes: list[Outcome | None] = []
        for pending, _ in replies:
            if pending is None:
                outcomes.append(None)
                continue
            try:
                outcomes.append(await pending.wait())
            except ActorCrashed as exc:  # the provider crashed on it (and is being restarted)
                outcomes.append(Crashed(str(exc)))
        # A record seen before that succeeds now resolves the dead letter an earlier run may have left.
        maybe_dead = [d.notification_id for (_, d), o, (_, seen) in zip(deliveries, outcomes, replies) if seen and isinstance(o, Sent)]
        resolved = set(await self.store.resolve_dead_letters(self.channel.value, maybe_dead)) if maybe_dead else set()
        events: list[StatusEvent] = []
        inbox = []
        for i, ((record, delivery), outcome) in enumerate(zip(deliveries, outcomes)):
            if outcome is None:
                events.append(await self._stopped_at_fire(delivery, stopped[i]))
            elif isinstance(outcome, Sent):
                if delivery.notification_id in resolved:
                    events.append(self._resolved_event(delivery))
                events.extend(self._sent_events(delivery, outcome))
                if self.channel is Channel.WEB:
                    inbox.append(inbox_entry(delivery, record.offset))
            elif isinstance(outcome, PermanentFailure) and outcome.dead_letter:
                events.extend(await self._dead_letter(delivery, f"poison message: {outcome.error}"))
            elif isinstance(outcome, PermanentFailure):
                events.append(self._event(delivery, Status.FAILED, outcome.error))
            elif isinstance(outcome, Crashed) and any(h.crashed for h in delivery.history):
                events.extend(await self._dead_letter(delivery, f"poison message (crashed twice): {outcome.error}", crashed=True))
            elif delivery.attempt >= self.retry.max_attempts:
                events.extend(await self._dead_letter(delivery, outcome.error, crashed=isinstance(outcome, Crashed)))
            elif isinstance(outcome, Crashed):
                events.append(await self._schedule_retry(delivery, outcome.error, None, crashed=True))
            else:
                events.append(await self._schedule_retry(delivery, outcome.error, outcome.after_s))
        await ask(self.recorder.send, lambda reply: RecordEvents(tuple(events), tuple(inbox), reply))

    async def _check_at_fire(self, delivery: Delivery) -> FireCheck:
        """The user's preferences, read now, applied to a record that waited (actors.domain.preferences.check_at_fire)."""
        assert self.users is not None
        profile = await self.users.profile(delivery.user_id)
        zone = await self.users.zone(profile.preferences.timezone)
        check = check_at_fire(delivery, profile, wall_ms(), zone)
        if check.skip is None and check.hold_until_ms is None:
            return check
        if await self.store.sent_status(delivery.notification_id, self.channel.value) is not None:
            return FireCheck(delivery)  # an earlier run sent it: the provider answers "already sent", nothing is failed or held
        return check

    async def _stopped_at_fire(self, delivery: Delivery, check: FireCheck) -> StatusEvent:
        """RecordEvents a record that waited and may not go out now: failed with the reason, or held again by quiet hours."""
        if check.skip is not None:
            self.stopped_at_fire += 1
            log.info("%s %s not sent: %s (preferences read when it went out)", self.channel.value, delivery.notification_id, check.skip)
            return self._event(delivery, Status.FAILED, check.skip)
        assert check.hold_until_ms is not None
        until = check.hold_until_ms
        entry = Scheduled(
            id=f"quiet:{delivery.notification_id}:{self.channel.value}:{until}",  # not Ingress's id: that one may not be unscheduled yet
            due_ms=until,
            topic=self.topic,
            key=delivery.user_id.encode(),
            value=encode_delivery(check.delivery),
        )
        await ask(self.scheduler.send, lambda reply: ScheduleAt(entry, reply))
        self.held_at_fire += 1
        return self._event(delivery, Status.QUEUED, f"quiet hours until {iso(until)}")

    def _event(self, delivery: Delivery, status: Status, detail: str = "", at_ms: int | None = None) -> StatusEvent:
        return StatusEvent(
            delivery.notification_id, delivery.user_id, self.channel, status, wall_ms() if at_ms is None else at_ms,
            detail=detail, created_ms=delivery.created_ms, priority=delivery.priority,
        )

    def _sent_events(self, delivery: Delivery, outcome: Sent) -> list[StatusEvent]:
        if outcome.status is Status.DELIVERED:
            return [self._event(delivery, Status.SENT, f"attempt {delivery.attempt}"), self._event(delivery, Status.DELIVERED, outcome.detail)]
        return [self._event(delivery, outcome.status, outcome.detail)]

    def _resolved_event(self, delivery: Delivery) -> StatusEvent:
        """Lets a status an earlier run left at dead_lettered move on to the delivery's outcome."""
        return StatusEvent(
            delivery.notification_id, delivery.user_id, self.channel, Status.QUEUED, wall_ms(),
            detail="attempted again and succeeded: its dead-letter entry is resolved", created_ms=delivery.created_ms,
            priority=delivery.priority, replay=True,
        )

    async def _schedule_retry(self, delivery: Delivery, error: str, after_s: float | None, *, crashed: bool = False) -> StatusEvent:
        now = wall_ms()
        delay_s = after_s if after_s is not None else self.retry.delay(delivery.attempt)
        due = now + int(delay_s * 1000)
        history = [*delivery.history, AttemptRecord(delivery.attempt, now, error, crashed)]
        retry = msgspec.structs.replace(delivery, attempt=delivery.attempt + 1, history=history)
        entry = Scheduled(
            id=f"retry:{delivery.notification_id}:{self.channel.value}:{retry.attempt}",
            due_ms=due,
            topic=self.topic,
            key=delivery.user_id.encode(),
            value=encode_delivery(retry),
        )
        await ask(self.scheduler.send, lambda reply: ScheduleAt(entry, reply))
        self.retried += 1
        detail = f"attempt {delivery.attempt} failed: {error}; attempt {retry.attempt} at {iso(due)}"
        return self._event(delivery, Status.QUEUED, detail, now)

    async def _dead_letter(self, delivery: Delivery, error: str, *, crashed: bool = False) -> list[StatusEvent]:
        """Put it in the channel's DLQ (replacing an entry an earlier run left); nothing if it was sent meanwhile."""
        if await self.store.sent_status(delivery.notification_id, self.channel.value) is not None:
            log.info("%s %s: not dead-lettered, another attempt sent it (send ledger)", self.channel.value, delivery.notification_id)
            return []
        now = wall_ms()
        history = [*delivery.history, AttemptRecord(delivery.attempt, now, error, crashed)]
        final = msgspec.structs.replace(delivery, history=history)
        await self.store.dead_letter(
            DeadLetter(0, self.channel.value, delivery.notification_id, delivery.user_id, error,
                       delivery.attempt, delivery.created_ms, now, encode_delivery(final))
        )
        self.dead_lettered += 1
        log.warning("%s %s dead-lettered after %d attempt(s): %s", self.channel.value, delivery.notification_id, delivery.attempt, error)
        return [self._event(delivery, Status.DEAD_LETTERED, f"after {delivery.attempt} attempt(s): {error}", now)]


class ConsumerGroup:
    """Runs one supervised PartitionConsumer per partition the bus assigns to this member."""

    def __init__(self, bus: Bus, channel: Channel, make: Callable[[int], PartitionConsumer], policy: RestartPolicy) -> None:
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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
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

    async def _run_partition(self, partition: int, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
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
