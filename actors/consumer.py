"""PartitionConsumer: reads one bus partition in order, hands each record to the channel's
Provider, records the outcomes, and commits the finished prefix.

The partition is pipelined: the consumer keeps fetching while earlier records are out,
as long as at most `window` offsets lie between the committed offset and the fetch
position (and at most `window_bytes` of record values are out, plus one fetch). Every
Attempt goes to the Provider in offset order (the Provider keeps each user's in that
order, and runs different users' at once); each record's outcome is concluded by a task
of its own, in whatever order the Provider answers. A settling task records the
outcomes in one Recorder call per group (a group: what concludes within SETTLE_LINGER_S
of the first, up to a fetch's worth, or at once when everything out has concluded, so a
quiet partition waits for nothing), and then commits the highest offset below which every record has its outcome
recorded (actors/domain/offset_tracker.py: out-of-order completion, in-order commit).
A crash anywhere means every record at or above the committed offset is read again,
and only those: at-least-once, with the send ledger suppressing what was sent.

A retryable outcome is handed to the Scheduler (durably) with its next attempt due
after an exponential backoff with full jitter, so the partition keeps flowing while it
waits. After `max_attempts` the record goes to the channel's dead-letter queue with its
last error and attempt history. A permanent failure fails the channel at once, unless
the client refused the delivery's content (`dead_letter`): then it is dead-lettered at
once. A delivery that crashed the client (Crashed) or the provider (ActorCrashed) is
retried once; the second crash dead-letters it as a poison message. One the Provider
dropped unanswered because it stopped for another reason (AttemptInterrupted) is retried
later with no crash counted against it.

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
produces). The argument: a consumer of the group fetches only while its fetch position
is less than `window` offsets past its last durable commit, and asks for no more than
that room (the bus never returns more than asked). So when a consumer starts on a
partition (at start-up, after a crash, or when the partition is assigned to it), every
record an earlier owner attempted without committing lies in the first window,
[committed, committed + window): only those are maybe-sent, plus any record that waited
(a retry, a replay, one held by quiet hours). This holds as long as no member of the
group ran with a larger window since the last commit: lower `consumer_window` only
after a clean stop (which commits what is in hand), not across a crash.

ConsumerGroup follows the bus's assignment stream: it starts a supervised
PartitionConsumer for every assigned partition and stops the revoked ones.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

import msgspec
import trio

from protocol.channels import LANES, Channel, Lane
from protocol.lifecycle import Status
from protocol.messages import (
    AttemptRecord,
    Crashed,
    Delivery,
    InboxEntry,
    Outcome,
    PermanentFailure,
    RetryLater,
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
from .domain.offset_tracker import OffsetTracker
from .domain.preferences import FireCheck, check_at_fire, waited
from .messages import Attempt, AttemptInterrupted, RecordEvents, RecorderMessage
from .metrics import new_outcomes
from .provider import ALREADY_SENT
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


@dataclass(frozen=True, slots=True)
class Concluded:
    """One record's outcome, ready to record (no events: an undecodable record, nothing to write)."""

    offset: int
    size: int
    events: tuple[StatusEvent, ...]
    inbox: tuple[InboxEntry, ...]
    resolves: Delivery | None = None  # seen before and sent now: resolves the dead letter an earlier run may have left


SETTLE_LINGER_S = 0.1  # the longest the settler waits for more outcomes (up to a fetch's worth) to record with the first
HAND_OUT_SLICE = 64  # fetched records decoded and handed out between two checkpoints (issue 10 item 6)


class PartitionConsumer:
    tracker = OffsetTracker  # what decides the committable offset (tests swap in a broken one to see it caught)

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
        window: int | None = None,
        window_bytes: int = 16 * 1024 * 1024,
        lane: Lane = Lane.BULK,
        outcomes: dict[str, int] | None = None,
    ) -> None:
        if batch < 1 or (window is not None and window < 1) or window_bytes < 1:
            raise ValueError(f"batch, window and window_bytes must be at least 1: {batch!r}, {window!r}, {window_bytes!r}")
        self.bus = bus
        self.group = group
        self.channel = channel
        self.lane = lane  # retries and holds at fire go back to this lane's topic (self.topic)
        self.topic = channel.topic(lane)
        self.partition = partition
        self.provider = provider
        self.recorder = recorder
        self.scheduler = scheduler
        self.store = store
        self.batch = batch  # records asked for per fetch
        self.window = window if window is not None else batch  # offsets out past the durable commit, at most
        self.window_bytes = window_bytes  # bytes of record values out, at most (plus one fetch)
        self.retry = retry
        self.users = users  # None: no preferences, nothing to check again when a record that waited goes out
        self._stopping = trio.Event()
        self._fetch_scope: trio.CancelScope | None = None
        self._maybe_sent_below = 0  # records below this offset may have been attempted by an earlier owner (see above)
        self._tracker = OffsetTracker(0)
        self._committed = 0  # the last durable commit
        self._bytes_out = 0
        self._room = trio.Event()  # set (and replaced) when a commit makes room in the window
        self.processed = 0
        self.undecodable = 0
        self.retried = 0
        self.dead_lettered = 0
        self.stopped_at_fire = 0  # records that waited and were no longer allowed when they went out
        self.held_at_fire = 0  # records that waited and met quiet hours when they went out
        self.peak_out = 0  # the most offsets out past the durable commit at once
        # Each concluded attempt's outcome (actors/metrics.py OUTCOMES), shared by the channel's consumers: herald_deliveries_total
        self.outcomes = outcomes if outcomes is not None else new_outcomes()

    def stop(self) -> None:
        """Fetch no more, conclude and record what is out, commit it, and return."""
        self._stopping.set()
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()

    @property
    def out(self) -> int:
        """Offsets between the durable commit and the fetch position: what a crash now would read again."""
        return self._tracker.position - self._committed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        offset = await self.bus.committed(self.group, self.topic, self.partition)
        # The first window: what an earlier owner of the partition may have attempted without committing.
        self._maybe_sent_below = offset + self.window
        self._tracker = self.tracker(offset)
        self._committed = offset
        self._bytes_out = 0
        task_status.started()
        concluded_in, concluded_out = trio.open_memory_channel[Concluded](math.inf)  # at most `window` in it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._settle, concluded_out)
            # Answers come by callback (_Answer): the Provider's reply concludes a sent record at once, without a task.
            self._answers = _Answers(self, nursery, concluded_in.clone())
            try:
                async with concluded_in:
                    await self._fetch(nursery, concluded_in)
            finally:
                self._answers.fetched_all()
            # stopping: the settler records and commits what is out, then returns once every record is concluded

    async def _fetch(self, nursery: trio.Nursery, concluded: trio.MemorySendChannel[Concluded]) -> None:
        """Fetch while the window has room, and hand out every record in offset order."""
        while not self._stopping.is_set():
            records: list[BusRecord] = []
            with trio.CancelScope() as self._fetch_scope:
                if self._stopping.is_set():
                    break
                while self.out >= self.window or self._bytes_out >= self.window_bytes:
                    await self._room.wait()
                room = min(self.batch, self.window - self.out)
                records = await self.bus.fetch(self.group, self.topic, self.partition, self._tracker.position, room)
            self._fetch_scope = None
            for n, record in enumerate(records):
                if n and not n % HAND_OUT_SLICE:  # a large fetch handed out in slices: the loop free between them
                    await trio.lowlevel.checkpoint()
                await self._hand_out(record, nursery, concluded)
            self.peak_out = max(self.peak_out, self.out)

    async def _hand_out(self, record: BusRecord, nursery: trio.Nursery, concluded: trio.MemorySendChannel[Concluded]) -> None:
        self._tracker.start(record.offset)
        size = len(record.value)
        self._bytes_out += size
        try:
            delivery = decode_delivery(record.value)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            # Nothing to deliver and no id to record it under: log it and move on.
            self.undecodable += 1
            self.outcomes["undecodable"] += 1
            log.error("%s/%d@%d: undecodable record skipped: %s", self.topic, self.partition, record.offset, exc)
            concluded.send_nowait(Concluded(record.offset, size, (), ()))
            return
        # A record that waited meets the user's preferences as they are now (fresh ones were just planned).
        if self.users is not None and waited(delivery):
            check = await self._check_at_fire(delivery)
            if check.skip is not None or check.hold_until_ms is not None:
                nursery.start_soon(self._conclude_stopped, record, size, delivery, check, concluded.clone())
                return
            delivery = check.delivery
        maybe_sent = record.offset < self._maybe_sent_below or waited(delivery) or delivery.keyed
        attempt = Attempt(delivery, self._answers.reply(record, size, delivery, maybe_sent), maybe_sent)
        if not self.provider.offer(attempt):  # room in the Provider's mailbox: handed over without a turn of the scheduler
            await self.provider.send(attempt)

    async def _conclude_stopped(
        self, record: BusRecord, size: int, delivery: Delivery, check: FireCheck, concluded: trio.MemorySendChannel[Concluded],
    ) -> None:
        async with concluded:
            event = await self._stopped_at_fire(delivery, check)
            await concluded.send(Concluded(record.offset, size, (event,), ()))

    def _concluded_sent(self, record: BusRecord, size: int, delivery: Delivery, outcome: Sent, maybe_sent: bool) -> Concluded:
        """A sent record's conclusion (nothing to wait for): its events and inbox entry; with `resolves` if seen before."""
        # A record seen before that succeeds now resolves the dead letter an earlier run may have left (the settler asks).
        inbox = (inbox_entry(delivery, record.offset),) if self.channel is Channel.WEB else ()
        self.outcomes[self._sent_outcome(outcome)] += 1
        return Concluded(record.offset, size, tuple(self._sent_events(delivery, outcome)), inbox, delivery if maybe_sent else None)

    async def _conclude(
        self, record: BusRecord, size: int, delivery: Delivery, reply: Reply[Outcome], maybe_sent: bool,
        concluded: trio.MemorySendChannel[Concluded],
    ) -> None:
        """Wait for the Provider's outcome and decide what follows (retry, dead letter); the settler records it."""
        async with concluded:
            try:
                outcome = await reply.wait()
            except AttemptInterrupted as exc:  # the provider stopped for another attempt's sake: not this one's fault
                outcome = RetryLater(str(exc))
            except ActorCrashed as exc:  # the provider crashed on it (and is being restarted)
                outcome = Crashed(str(exc))
            if isinstance(outcome, Sent):
                await concluded.send(self._concluded_sent(record, size, delivery, outcome, maybe_sent))
                return
            events: list[StatusEvent] = []
            inbox: tuple[InboxEntry, ...] = ()
            resolves = None
            if isinstance(outcome, PermanentFailure) and outcome.dead_letter:
                events.extend(await self._dead_letter(delivery, f"poison message: {outcome.error}"))
            elif isinstance(outcome, PermanentFailure):
                self.outcomes["failed"] += 1
                events.append(self._event(delivery, Status.FAILED, outcome.error))
            elif isinstance(outcome, Crashed) and any(h.crashed for h in delivery.history):
                events.extend(await self._dead_letter(delivery, f"poison message (crashed twice): {outcome.error}", crashed=True))
            elif delivery.attempt >= self.retry.max_attempts:
                events.extend(await self._dead_letter(delivery, outcome.error, crashed=isinstance(outcome, Crashed)))
            elif isinstance(outcome, Crashed):
                events.append(await self._schedule_retry(delivery, outcome.error, None, crashed=True))
            else:
                events.append(await self._schedule_retry(delivery, outcome.error, outcome.after_s))
            await concluded.send(Concluded(record.offset, size, tuple(events), inbox, resolves))

    async def _settle(self, concluded: trio.MemoryReceiveChannel[Concluded]) -> None:
        """Record what is concluded (one Recorder call for all that is ready), then commit the finished prefix."""
        async with concluded:
            async for first in concluded:
                # Record together what concludes within a moment of the first (one Recorder write, one commit), up to a
                # fetch's worth, or at once when nothing else is out.
                ready = [first]
                with trio.move_on_after(SETTLE_LINGER_S):
                    while len(ready) < self.batch and len(ready) < self._tracker.outstanding:
                        try:  # what is there already is taken without a turn of the scheduler per outcome
                            ready.append(concluded.receive_nowait())
                        except trio.WouldBlock:
                            try:
                                ready.append(await concluded.receive())
                            except trio.EndOfChannel:
                                break
                        except trio.EndOfChannel:
                            break
                resolving = [c.resolves.notification_id for c in ready if c.resolves is not None]
                resolved = set(await self.store.resolve_dead_letters(self.channel.value, resolving)) if resolving else set()
                events = tuple(
                    e for c in ready
                    for e in ((self._resolved_event(c.resolves),) if c.resolves and c.resolves.notification_id in resolved else ())
                    + c.events
                )
                inbox = tuple(i for c in ready for i in c.inbox)
                if events or inbox:
                    await ask(self.recorder.send, lambda reply: RecordEvents(events, inbox, reply))
                for c in ready:
                    self._tracker.finish(c.offset)
                    self._bytes_out -= c.size
                self.processed += len(ready)
                committable = self._tracker.committable
                if committable > self._committed:
                    await self.bus.commit(self.group, self.topic, self.partition, committable)
                    self._committed = committable
                self._room.set()
                self._room = trio.Event()

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
            self.outcomes["stopped"] += 1
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
        self.outcomes["held"] += 1
        return self._event(delivery, Status.QUEUED, f"quiet hours until {iso(until)}")

    def _event(self, delivery: Delivery, status: Status, detail: str = "", at_ms: int | None = None) -> StatusEvent:
        return StatusEvent(
            delivery.notification_id, delivery.user_id, self.channel, status, wall_ms() if at_ms is None else at_ms,
            detail=detail, created_ms=delivery.created_ms, priority=delivery.priority,
        )

    @staticmethod
    def _sent_outcome(outcome: Sent) -> str:
        """The outcome a Sent counts as (herald_deliveries_total): delivered, sent, or suppressed by the send ledger."""
        if outcome.detail == ALREADY_SENT:
            return "duplicate_suppressed"
        return "delivered" if outcome.status is Status.DELIVERED else "sent"

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
        self.outcomes["retry"] += 1
        detail = f"attempt {delivery.attempt} failed: {error}; attempt {retry.attempt} at {iso(due)}"
        return self._event(delivery, Status.QUEUED, detail, now)

    async def _dead_letter(self, delivery: Delivery, error: str, *, crashed: bool = False) -> list[StatusEvent]:
        """Put it in the channel's DLQ (replacing an entry an earlier run left); nothing if it was sent meanwhile."""
        if await self.store.sent_status(delivery.notification_id, self.channel.value) is not None:
            log.info("%s %s: not dead-lettered, another attempt sent it (send ledger)", self.channel.value, delivery.notification_id)
            self.outcomes["duplicate_suppressed"] += 1
            return []
        now = wall_ms()
        history = [*delivery.history, AttemptRecord(delivery.attempt, now, error, crashed)]
        final = msgspec.structs.replace(delivery, history=history)
        await self.store.dead_letter(
            DeadLetter(0, self.channel.value, delivery.notification_id, delivery.user_id, error,
                       delivery.attempt, delivery.created_ms, now, encode_delivery(final))
        )
        self.dead_lettered += 1
        self.outcomes["dead_lettered"] += 1
        log.warning("%s %s dead-lettered after %d attempt(s): %s", self.channel.value, delivery.notification_id, delivery.attempt, error)
        return [self._event(delivery, Status.DEAD_LETTERED, f"after {delivery.attempt} attempt(s): {error}", now)]


class _Answer(Reply[Outcome]):
    """The Reply of one Attempt: the Provider's answer is handed to the consumer as it is given (no task waits on it)."""

    __slots__ = ("answers", "record", "size", "delivery", "maybe_sent")

    def __init__(self, answers: _Answers, record: BusRecord, size: int, delivery: Delivery, maybe_sent: bool) -> None:
        super().__init__()
        self.answers = answers
        self.record = record
        self.size = size
        self.delivery = delivery
        self.maybe_sent = maybe_sent

    def _settle(self, outcome: tuple[Outcome] | BaseException) -> None:
        if self.done:
            return
        super()._settle(outcome)
        self.answers.answered(self, outcome)


class _Answers:
    """A PartitionConsumer's attempts awaiting the Provider's answer. A Sent answer is concluded where it is given (the
    Provider's reply: synchronous, nothing to wait for); any other answer, or an error, gets a task of its own that
    decides what follows (`_conclude`: retry, dead letter) as before. The concluded channel is closed once everything
    fetched is answered, so the settler sees its end exactly when every record is concluded."""

    def __init__(self, consumer: PartitionConsumer, nursery: trio.Nursery, concluded: trio.MemorySendChannel[Concluded]) -> None:
        self.consumer = consumer
        self.nursery = nursery
        self.concluded = concluded
        self.waiting = 0  # attempts sent and not answered
        self.fetching = True

    def reply(self, record: BusRecord, size: int, delivery: Delivery, maybe_sent: bool) -> _Answer:
        self.waiting += 1
        return _Answer(self, record, size, delivery, maybe_sent)

    def fetched_all(self) -> None:
        """The fetch loop ended: close the channel once the last answer is in (now, if none is awaited)."""
        self.fetching = False
        if self.waiting == 0:
            self.concluded.close()

    def answered(self, answer: _Answer, outcome: tuple[Outcome] | BaseException) -> None:
        """Called from inside the Provider's reply.send/fail: must not raise into it, nor block."""
        self.waiting -= 1
        consumer = self.consumer
        ready = consumer._concluded_sent(answer.record, answer.size, answer.delivery, outcome[0], answer.maybe_sent) \
            if isinstance(outcome, tuple) and isinstance(outcome[0], Sent) else None
        try:
            if ready is not None:
                self.concluded.send_nowait(ready)
            else:
                self.nursery.start_soon(consumer._conclude, answer.record, answer.size, answer.delivery, answer,
                                        answer.maybe_sent, self.concluded.clone())
        except (trio.ClosedResourceError, trio.BrokenResourceError, RuntimeError):
            # The consumer is gone (cancelled: its partition revoked, or it crashed): the record was not committed and
            # is read again by the partition's next owner, as when its _conclude task was cancelled.
            return
        if self.waiting == 0 and not self.fetching:
            self.concluded.close()


class ConsumerGroup:
    """Runs one supervised PartitionConsumer per partition of the channel's lane topics the bus assigns to this member.

    One group (`herald-<channel>`) follows every lane's topic (docs/reliability.md, "Priority lanes"): each lane
    partition has a consumer of its own, with its own finished-prefix commit, so a bulk backlog never stands
    between a critical record and its fetch; the Provider gives the critical lane its own mailbox and reserved slots.
    """

    def __init__(
        self, bus: Bus, channel: Channel, make: Callable[[Lane, int], PartitionConsumer], policy: RestartPolicy,
    ) -> None:
        self.bus = bus
        self.channel = channel
        self.make = make  # (lane, partition) -> PartitionConsumer
        self.policy = policy
        self.group = f"herald-{channel.value}"
        self.lanes = {channel.topic(lane): lane for lane in LANES}
        self._running: dict[tuple[str, int], tuple[Supervisor, trio.CancelScope, trio.Event]] = {}
        self._stopping = trio.Event()
        self._scope: trio.CancelScope | None = None

    def consumers(self) -> list[Supervisor]:
        return [sup for sup, _, _ in self._running.values()]

    def partitions(self, topic: str) -> list[int]:
        """The partitions of `topic` (a lane's) this member consumes now (herald_bus_consumer_lag_records reads their lag)."""
        return sorted(partition for (of, partition) in self._running if of == topic)

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
                async with aclosing(self.bus.assignments(self.group, sorted(self.lanes))) as changes:
                    async for change in changes:
                        for topic_partition in sorted(change.revoked):
                            await self._revoke(topic_partition)
                        for topic, partition in sorted(change.assigned):
                            await nursery.start(self._run_partition, topic, partition)
                        if not started:
                            task_status.started()
                            started = True
            if not started:
                task_status.started()

    async def _run_partition(
        self, topic: str, partition: int, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        lane = self.lanes[topic]
        consumer = self.make(lane, partition)
        name = f"{self.group}/{partition}" if lane is Lane.BULK else f"{self.group}/{lane.value}/{partition}"
        supervisor = Supervisor(name, [ChildSpec(f"partition-{partition}", consumer.run, stop=consumer.stop)], self.policy)
        done = trio.Event()
        with trio.CancelScope() as scope:
            self._running[topic, partition] = (supervisor, scope, done)
            try:
                await supervisor.run(task_status=task_status)
            finally:
                done.set()
                self._running.pop((topic, partition), None)

    async def _revoke(self, topic_partition: tuple[str, int]) -> None:
        entry = self._running.get(topic_partition)
        if entry is not None:
            supervisor, _, done = entry
            supervisor.stop()
            await done.wait()
