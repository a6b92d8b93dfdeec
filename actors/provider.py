"""Provider: one per channel; owns the channel client, its token bucket and its breaker.

It takes Attempts in mailbox order and answers each with an Outcome, running up to
`max_in_flight` of them at once, but never two of one user's (of one lane) at once and each user's in
mailbox order (the consumers send a partition's records in bus order, and a user's records
are all in one partition: so in bus order per user). Attempts wait in a queue per user id
(`_queues`), and a user with nothing queued or in flight holds nothing; one task per queue
works through it. At most `max_in_flight` attempts run, and at most `max_in_flight` more
wait (for their user's turn or a free slot) before the mailbox is read again: backpressure
flows to the consumers as before.

Priority lanes (docs/reliability.md): the critical lane's attempts come on a mailbox of
their own (`critical`), read beside the bulk one, and queue per (user, lane): per-user
order is per lane, and a critical attempt never waits behind bulk ones in a mailbox or a
user's queue. Bulk attempts run at most `max_in_flight - critical_reserve` at once, so
`critical_reserve` slots are always there for critical ones (which may use every slot).
The `Gate` holds
rate limiting and circuit breaking: `admit` runs before the client is called (it waits
as long as the bucket or an open breaker says), `settle` sees every outcome. The gate's
bucket and breaker are shared, through the State, with the other workers of the same
provider (actors/services/gate.py); at stop the Provider gives back what its gate holds.

The send ledger makes redelivery safe: an Attempt that may have been tried before is
checked against it, and every send is written to it (durably) before the answer goes
back. The one duplicate left is a crash between the provider's answer and that write.
A ledger that cannot be reached (PortUnavailable: PostgreSQL away) is waited for in place,
with backoff (reactor/until_available.py): the lookup or the write is made again until it
succeeds, the attempt's answer waits with it, so its record is not committed meanwhile (if
the worker stops first, the record comes again, maybe-sent: the ledger is asked then).

A circuits query (`CircuitQuery`, from GET /v1/admin/circuits) comes on a mailbox of its
own (`queries`) and is answered by a second task of the actor (`answer_queries`, supervised
beside `run`): the attempts may wait a minute for an open breaker, and the operator asks
precisely then. The answer is the
gate's view (`Gate.view`) and the Provider's counters.

A push provider's verdict that a device token is unregistered (the outcome's
`unregistered_tokens`) removes those tokens from the user's devices before the answer.

A throttled verdict (`RetryLater(throttled=True)`: the provider's 429) is not the
provider's ill health: the gate holds its bucket for the wait the provider asked and does
not count it against the breaker, and the attempt is sent again in place after that wait
(the user's order kept) while its waits add up to at most `throttle_wait_s`, at most
MAX_THROTTLED_RESENDS times; beyond that, the throttled RetryLater is the attempt's outcome.

What a client raises is the attempt's outcome, never the Provider's crash: an OSError
(the client's own I/O: disk full, a refused connection) is RetryLater, anything else is
Crashed (the consumer retries it once and dead-letters it as poison if it crashes the
client again). A message's content can thus never use up the delivery stage's restart
intensity. The Provider itself crashes only on its own state's errors (the ledger, the
gate, the device store); its supervisor restarts it, and the consumer counts that crash
against the message as well, so a message that crashes it twice is dead-lettered. The
other attempts it held then (running, or queued behind a user's earlier one) are failed
with `AttemptInterrupted`: not their fault, so the consumer retries them later without
counting a crash against them (one that was at the provider's client when it was
cancelled may have been sent: its retry asks the send ledger first).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from protocol.api import CircuitView
from protocol.channels import Channel, Lane
from protocol.lifecycle import Status
from protocol.messages import Crashed, Delivery, Outcome, PermanentFailure, RetryLater, Sent
from reactor.ask import ActorCrashed
from reactor.clock import iso, wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import PortUnavailable, Store
from reactor.until_available import until_available

from .messages import Attempt, AttemptInterrupted, CircuitQuery
from .services.gate import GateView

log = logging.getLogger("herald.provider")

BULK_LOOKUPS = 2  # the bulk lane's send-ledger lookups at the Store at once (a Store serves a few reads at once anyway)
MAX_THROTTLED_RESENDS = 10  # per attempt: a provider answering 429 with Retry-After 0 is not asked again and again
ALREADY_SENT = "already sent (send ledger): not sent again"  # the detail of a Sent the send ledger answered


class ChannelClient(Protocol):
    """Talks to one provider. Returns the verdict (content it cannot send: PermanentFailure(dead_letter=True));
    an exception is taken as RetryLater (OSError) or Crashed (anything else)."""

    async def send(self, delivery: Delivery) -> Outcome: ...


class BatchClient(ChannelClient, Protocol):
    """A client that also takes a batch in one call (the sandbox sinks: one durable write for the batch). `send_many`
    answers one outcome per delivery, in order; it raises only before anything of the batch was sent."""

    sends_many: bool

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]: ...


def sends_many(client: object) -> bool:
    """Whether `client` takes batches (`BatchClient`): the Provider then serves a batch of users per task."""
    return bool(getattr(client, "sends_many", False))


class Devices(Protocol):
    async def forget_devices(self, user_id: str, tokens: Iterable[str]) -> int:
        """Remove device tokens a provider called unregistered; returns how many were registered."""


class Gate(Protocol):
    async def admit(self, delivery: Delivery) -> None: ...

    def admit_nowait(self, delivery: Delivery) -> bool:
        """Admit at once where `admit` would without waiting or asking anyone; False where it would have to (nothing spent)."""

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """See the outcome of an admitted call."""

    async def abandon(self, delivery: Delivery) -> None:
        """An admitted call ended with no outcome (the client crashed, or was cancelled); also called cancelled."""

    async def release(self) -> None:
        """The worker stops: give back what the gate holds (bounded; also called cancelled)."""

    async def view(self) -> GateView:
        """The breaker and bucket as GET /v1/admin/circuits shows them."""


async def _acquire(semaphore: trio.Semaphore) -> None:
    """Take a free slot without yielding to the event loop (each yield costs a turn of the scheduler, per attempt);
    wait for one as usual when none is free. The attempt's own awaits that follow are its checkpoints."""
    try:
        semaphore.acquire_nowait()
    except trio.WouldBlock:
        await semaphore.acquire()


async def _take_slots(slots: _LaneSlots, running: trio.Semaphore) -> None:
    """A running slot (and the lane's own, for bulk: first, so `critical_reserve` slots stay free), waiting as needed."""
    if slots.running is not None:
        await _acquire(slots.running)
    try:
        await _acquire(running)
    except BaseException:  # cancelled while waiting: the lane's slot goes back
        if slots.running is not None:
            slots.running.release()
        raise


def _try_slots(slots: _LaneSlots, running: trio.Semaphore) -> bool:
    """`_take_slots` where both are free now; False (nothing taken) where either is not."""
    if slots.running is not None:
        try:
            slots.running.acquire_nowait()
        except trio.WouldBlock:
            return False
    try:
        running.acquire_nowait()
    except trio.WouldBlock:
        if slots.running is not None:
            slots.running.release()
        return False
    return True


def _give_slots(slots: _LaneSlots, running: trio.Semaphore) -> None:
    running.release()
    if slots.running is not None:
        slots.running.release()


class OpenGate:
    """No rate limit, no breaker: every attempt goes straight through, but after a throttled verdict's wait."""

    def __init__(self) -> None:
        self._paused_until = -math.inf

    async def admit(self, delivery: Delivery) -> None:
        wait = self._paused_until - trio.current_time()
        if wait > 0:
            await trio.sleep(wait)

    def admit_nowait(self, delivery: Delivery) -> bool:
        return self._paused_until <= trio.current_time()

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        if isinstance(outcome, RetryLater) and outcome.throttled and outcome.after_s is not None and not outcome.recipient:
            self._paused_until = max(self._paused_until, trio.current_time() + outcome.after_s)

    async def abandon(self, delivery: Delivery) -> None:
        return None

    async def release(self) -> None:
        return None

    async def view(self) -> GateView:
        return GateView("none", 0, 0, 0, math.inf, math.inf, math.inf, 0, 0, {}, None)


@dataclass(frozen=True)
class _LaneSlots:
    holding: trio.Semaphore  # attempts of the lane taken from its mailbox and not answered
    running: trio.Semaphore | None  # the lane's own cap on running attempts (bulk: max_in_flight - critical_reserve)


@dataclass(frozen=True)
class _Run:
    """What the tasks of one run of a batching Provider share."""

    lanes: dict[Lane, _LaneSlots]
    running: trio.Semaphore
    failure: list[Exception]
    nursery: trio.Nursery


BATCH_MAX = 256  # attempts served by one task of a batching Provider at most (one send_many, one ledger write each)


class Provider:
    def __init__(
        self, channel: Channel, client: ChannelClient, mailbox: Mailbox[Attempt], ledger: Store, gate: Gate | None = None,
        devices: Devices | None = None, queries: Mailbox[CircuitQuery] | None = None, max_in_flight: int = 1,
        critical: Mailbox[Attempt] | None = None, critical_reserve: int = 0, throttle_wait_s: float = 60.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight!r}")
        if not 0 <= critical_reserve < max_in_flight:
            raise ValueError(f"critical_reserve must be from 0 to max_in_flight - 1 ({max_in_flight - 1}), got {critical_reserve!r}")
        self.channel = channel
        self.queries = queries
        self.devices = devices  # push: where unregistered tokens are removed
        self.client = client
        self.mailbox = mailbox  # the bulk lane's attempts (and every lane's, when there is no `critical` mailbox)
        self.critical = critical  # the critical lane's attempts: read beside `mailbox`, never behind its backlog
        self.critical_reserve = critical_reserve  # slots bulk attempts may not take: at most max_in_flight - this run bulk
        self._bulk_lookups = trio.Semaphore(BULK_LOOKUPS)  # bulk send-ledger lookups at the Store at once
        self.ledger = ledger
        self.ledger_waits = 0  # send-ledger calls made again because the Store could not be reached
        self.gate: Gate = gate or OpenGate()
        self.max_in_flight = max_in_flight
        # A throttled verdict with a wait is sent again after it, in place (the user's order kept), while the attempt's
        # waits add up to at most this; beyond it the throttled RetryLater goes back to the consumer (a scheduled retry).
        self.throttle_wait_s = throttle_wait_s
        self.throttled_resends = 0
        self.calls = 0
        self.suppressed = 0
        self.client_errors = 0  # client exceptions taken as outcomes (RetryLater or Crashed)
        self.in_flight = 0  # attempts running now (at most max_in_flight)
        self.peak_in_flight = 0
        # (user id, lane) -> that user's attempts of that lane taken, in order; its head runs (per-user order is per lane)
        self._queues: dict[tuple[str, Lane], deque[Attempt]] = {}
        self._held = 0  # attempts taken from the mailbox and not answered (running or queued)
        # A client that takes batches (`sends_many`): the users whose queue head may run, per lane, in the order they
        # became ready; one task per lane collects them into a batch (`_collecting`) and serves it (`_serve_batch`).
        self._ready: dict[Lane, deque[tuple[str, Lane]]] = {Lane.BULK: deque(), Lane.CRITICAL: deque()}
        self._collecting: dict[Lane, bool] = {Lane.BULK: False, Lane.CRITICAL: False}
        self._run_state: _Run | None = None
        self.batches = 0  # send_many calls (a batching client)

    @property
    def queued(self) -> int:
        """Attempts taken from the mailbox that wait for their user's earlier one or a free slot."""
        return self._held - self.in_flight

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Taken from each lane's mailbox: at most 2 x max_in_flight (running, or waiting for their user or a slot).
        running = trio.Semaphore(self.max_in_flight)
        lanes = {
            Lane.BULK: _LaneSlots(trio.Semaphore(2 * self.max_in_flight), trio.Semaphore(self.max_in_flight - self.critical_reserve)),
            Lane.CRITICAL: _LaneSlots(trio.Semaphore(2 * self.max_in_flight), None),
        }
        task_status.started()
        failure: list[Exception] = []  # the Provider's own error, raised by one user's task: the actor crashes with it
        try:
            async with trio.open_nursery() as nursery:
                if sends_many(self.client):
                    self._run_state = _Run(lanes, running, failure, nursery)
                if self.critical is not None:
                    nursery.start_soon(self._take, self.critical, lanes, running, failure, nursery)
                await self._take(self.mailbox, lanes, running, failure, nursery)
            if failure:
                raise failure[0]
        finally:
            self._run_state = None
            self._interrupt_held()
            await self.gate.release()  # the unspent slice goes back to the provider's other workers

    async def _take(
        self, mailbox: Mailbox[Attempt], lanes: dict[Lane, _LaneSlots], running: trio.Semaphore, failure: list[Exception],
        nursery: trio.Nursery,
    ) -> None:
        """Read one mailbox (a lane's): each attempt joins its user's queue in its lane, or starts one.

        What else waits in the mailbox is taken at once, while its lane has room, without a turn of
        the scheduler for each (a turn per attempt was a large share of a delivery's CPU).
        """
        async for attempt in mailbox:
            await self._queue(attempt, lanes, running, failure, nursery)
            while True:
                try:
                    more = mailbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                await self._queue(more, lanes, running, failure, nursery)

    async def _queue(
        self, attempt: Attempt, lanes: dict[Lane, _LaneSlots], running: trio.Semaphore, failure: list[Exception],
        nursery: trio.Nursery,
    ) -> None:
        """An attempt taken from its mailbox, once its lane has a slot: queued after its user's, or served at once."""
        delivery = attempt.delivery
        lane = delivery.priority.lane
        slots = lanes[lane]
        try:
            await _acquire(slots.holding)
        except BaseException:  # stopped while it waited for room: taken from the mailbox, so answered here
            attempt.reply.fail(AttemptInterrupted(f"{self.channel.value} provider stopped before answering"))
            raise
        self._held += 1
        key = (delivery.user_id, lane)
        queue = self._queues.get(key)
        if queue is not None:  # the user has one running or waiting in this lane: this one goes after it
            queue.append(attempt)
            return
        self._queues[key] = deque([attempt])
        if self._run_state is not None:
            self._make_ready(key)
            return
        nursery.start_soon(self._serve_user, key, slots, running, failure, nursery.cancel_scope)

    async def _serve_user(
        self, key: tuple[str, Lane], slots: _LaneSlots, running: trio.Semaphore, failure: list[Exception], scope: trio.CancelScope,
    ) -> None:
        """Work through one user's queue of one lane, one attempt at a time; the queue is dropped once empty."""
        queue = self._queues[key]
        while queue:
            attempt = queue[0]
            await _take_slots(slots, running)
            try:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    outcome = await self._attempt(attempt)
                except Exception as exc:
                    log.exception("%s provider failed (its own state) on %s", self.channel.value, attempt.delivery.notification_id)
                    self._answered(queue, slots.holding)
                    attempt.reply.fail(ActorCrashed(f"{self.channel.value} provider: {exc!r}"))
                    failure.append(exc)
                    scope.cancel()  # the others are interrupted; run raises this error
                    return
                finally:
                    self.in_flight -= 1
            finally:
                running.release()
                if slots.running is not None:
                    slots.running.release()
            self._answered(queue, slots.holding)
            attempt.reply.send(outcome)
        del self._queues[key]

    def _answered(self, queue: deque[Attempt], holding: trio.Semaphore) -> None:
        queue.popleft()
        self._held -= 1
        holding.release()

    # -- a batching client: a batch of users per task ----------------------------------

    def _make_ready(self, key: tuple[str, Lane]) -> None:
        """The user's queue head may run: it joins its lane's ready users, and a task collects them unless one does."""
        run = self._run_state
        assert run is not None
        lane = key[1]
        self._ready[lane].append(key)
        if not self._collecting[lane]:
            self._collect(lane, run)

    def _collect(self, lane: Lane, run: _Run) -> None:
        """Start the task that collects the lane's next batch; none once the Provider is being cancelled (its ready
        users' attempts are then interrupted with the rest: a new task would only be cancelled, and hand on again)."""
        if trio.current_effective_deadline() == -math.inf:
            return
        self._collecting[lane] = True
        run.nursery.start_soon(self._serve_batch, lane, run)

    async def _serve_batch(self, lane: Lane, run: _Run) -> None:
        """Collect the lane's ready users' queue heads (each with its slots, as `_serve_user` takes them: the first one
        waits for a slot, the others only take free ones), hand the collecting on, and serve the batch."""
        slots = run.lanes[lane]
        ready = self._ready[lane]
        batch: list[tuple[tuple[str, Lane], Attempt]] = []
        try:
            while ready and len(batch) < BATCH_MAX:
                if batch:
                    if not _try_slots(slots, run.running):
                        break
                else:
                    await _take_slots(slots, run.running)
                key = ready.popleft()
                batch.append((key, self._queues[key][0]))
        finally:
            self._collecting[lane] = False
            if ready:  # the next batch is collected while this one is served
                self._collect(lane, run)
        self.in_flight += len(batch)
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        unanswered = dict(batch)

        def answer(key: tuple[str, Lane], outcome: Outcome) -> None:
            attempt = unanswered.pop(key)
            self.in_flight -= 1
            _give_slots(slots, run.running)
            queue = self._queues[key]
            self._answered(queue, slots.holding)
            if queue:
                self._make_ready(key)  # the user's next attempt, after this one is answered
            else:
                del self._queues[key]
            attempt.reply.send(outcome)

        try:
            await self._attempt_batch(batch, answer)
        except Exception as exc:
            log.exception("%s provider failed (its own state) on a batch of %d", self.channel.value, len(batch))
            if unanswered:
                key, attempt = next(iter(unanswered.items()))
                del unanswered[key]
                self.in_flight -= 1
                _give_slots(slots, run.running)
                self._answered(self._queues[key], slots.holding)  # the others are interrupted (run's end)
                attempt.reply.fail(ActorCrashed(f"{self.channel.value} provider: {exc!r}"))
            run.failure.append(exc)
            run.nursery.cancel_scope.cancel()
        finally:
            for _ in unanswered:  # stopped (cancelled or crashed): the slots of what was not answered go back
                self.in_flight -= 1
                _give_slots(slots, run.running)

    async def _attempt_batch(
        self, batch: list[tuple[tuple[str, Lane], Attempt]], answer: Callable[[tuple[str, Lane], Outcome], None],
    ) -> None:
        """`_attempt` for a batch: each maybe-sent one asked of the ledger; then, in groups the gate admits at once (the
        first may wait, as `admit` does; the rest only where it would admit without waiting), one `send_many` per group,
        each outcome settled, one ledger write for the group's sends, the group answered; a throttled verdict is sent
        again after its wait (as `_attempt` does), then answered."""
        todo: list[tuple[tuple[str, Lane], Attempt]] = []
        for key, attempt in batch:
            if attempt.maybe_sent and self.channel is not Channel.WEB:
                status = await self._sent_status(attempt.delivery)
                if status is not None:
                    self.suppressed += 1
                    answer(key, Sent(Status(status), ALREADY_SENT))
                    continue
            todo.append((key, attempt))
        while todo:
            await self.gate.admit(todo[0][1].delivery)
            admitted = 1
            while admitted < len(todo) and self.gate.admit_nowait(todo[admitted][1].delivery):
                admitted += 1
            group, todo = todo[:admitted], todo[admitted:]
            deliveries = [attempt.delivery for _, attempt in group]
            outcomes = await self._send_many(deliveries)
            done: list[tuple[tuple[str, Lane], Delivery, Outcome]] = []
            again: list[tuple[tuple[str, Lane], Delivery, Outcome]] = []
            for (key, _), delivery, outcome in zip(group, deliveries, outcomes, strict=True):
                outcome = await self._settled(delivery, outcome)
                (again if self._resend(outcome, 0.0, 0) else done).append((key, delivery, outcome))
            await self._mark_sent([(delivery, outcome) for _, delivery, outcome in done])  # before any is answered
            for key, _, outcome in done:
                answer(key, outcome)
            for key, delivery, outcome in again:
                outcome = await self._resend_throttled(delivery, outcome)
                await self._mark_sent([(delivery, outcome)])
                answer(key, outcome)

    async def _send_many(self, deliveries: list[Delivery]) -> list[Outcome]:
        """One `send_many` of admitted deliveries; what it raises is each one's outcome as `send`'s would be (an error
        other than OSError, whose cause is not known, has each sent alone so a crash is its own delivery's)."""
        self.calls += len(deliveries)
        self.batches += 1
        try:
            try:
                outcomes = list(await self.client.send_many(deliveries))  # type: ignore[attr-defined]
            except OSError as exc:
                return [self._client_raised(d, exc) for d in deliveries]
            except Exception as exc:
                log.warning("%s client's send_many raised %r: each of the %d sent alone", self.channel.value, exc, len(deliveries))
                outcomes = []
                for delivery in deliveries:
                    try:
                        outcomes.append(await self.client.send(delivery))
                    except Exception as one:
                        outcomes.append(self._client_raised(delivery, one))
        except BaseException:
            for delivery in deliveries:
                await self.gate.abandon(delivery)  # a cancellation says nothing about the provider's health
            raise
        if len(outcomes) != len(deliveries):
            raise RuntimeError(f"{self.channel.value} client answered {len(outcomes)} outcomes for {len(deliveries)} deliveries")
        return outcomes

    async def _mark_sent(self, answered: list[tuple[Delivery, Outcome]]) -> None:
        """One durable send-ledger write for the sends among `answered` (a web send is never looked up: not written)."""
        if self.channel is Channel.WEB:
            return
        sent_ms = wall_ms()
        marks = [(d.notification_id, self.channel.value, o.status.value, sent_ms) for d, o in answered if isinstance(o, Sent)]
        if marks:
            await until_available(lambda: self.ledger.mark_sent_many(marks), self._ledger_what, self._ledger_waited)

    def _interrupt_held(self) -> None:
        """The Provider stops (crashed, or cancelled): fail every attempt it holds, not blamed on them."""
        queues, self._queues = self._queues, {}
        for lane in self._ready:  # a run after a restart starts with no user ready (they were all held: failed below)
            self._ready[lane].clear()
            self._collecting[lane] = False
        for queue in queues.values():
            for attempt in queue:
                attempt.reply.fail(AttemptInterrupted(f"{self.channel.value} provider stopped before answering"))
        self._held = 0

    async def answer_queries(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's second task (a supervised child of its own): answer circuits queries until the mailbox closes."""
        if self.queries is None:
            raise RuntimeError(f"the {self.channel.value} provider has no queries mailbox")
        task_status.started()
        async for query in self.queries:
            try:
                query.reply.send(await self.circuit())
            except Exception as exc:  # the view could not be read (its State): that query fails, the Provider does not
                log.warning("%s provider: circuit view failed: %r", self.channel.value, exc)
                query.reply.fail(ActorCrashed(f"{self.channel.value} provider: circuit view: {exc!r}"))

    async def circuit(self) -> CircuitView:
        """The gate's view and this Provider's counters."""
        gate = await self.gate.view()
        retry_at = iso(wall_ms() + int(gate.retry_in_s * 1000)) if gate.retry_in_s is not None and gate.retry_in_s > 0 else None
        return CircuitView(
            channel=self.channel, state=gate.state, consecutive_failures=gate.consecutive_failures, opened=gate.opened,
            rejected=gate.rejected, calls=self.calls, suppressed_duplicates=self.suppressed, tokens=gate.tokens,
            bucket_capacity=gate.bucket_capacity, refill_per_s=gate.refill_per_s, deferred=gate.deferred,
            throttled=gate.throttled, transitions=dict(gate.transitions), retry_at=retry_at,
            in_flight=self.in_flight, queued=self.queued, max_in_flight=self.max_in_flight,
        )

    async def _attempt(self, attempt: Attempt) -> Outcome:
        delivery = attempt.delivery
        # A web frame is pushed again rather than suppressed: sessions drop an id they already
        # had, and after a restart a client may be resuming right now and need the push.
        if attempt.maybe_sent and self.channel is not Channel.WEB:
            status = await self._sent_status(delivery)
            if status is not None:
                self.suppressed += 1
                return Sent(Status(status), ALREADY_SENT)
        outcome = await self._resend_throttled(delivery, await self._call_once(delivery))
        if isinstance(outcome, Sent) and self.channel is not Channel.WEB:  # a web send is never looked up (above)
            sent_ms = wall_ms()
            await until_available(lambda: self.ledger.mark_sent(delivery.notification_id, self.channel.value, outcome.status.value,
                                                                sent_ms), self._ledger_what, self._ledger_waited)
        return outcome

    async def _call_once(self, delivery: Delivery) -> Outcome:
        """Admit, call the client, and settle its outcome with the gate."""
        await self.gate.admit(delivery)  # after a throttled verdict, waits as long as the provider asked
        self.calls += 1
        try:
            outcome = await self.client.send(delivery)
        except Exception as exc:
            outcome = self._client_raised(delivery, exc)
        except BaseException:
            await self.gate.abandon(delivery)  # a cancellation says nothing about the provider's health
            raise
        return await self._settled(delivery, outcome)

    async def _settled(self, delivery: Delivery, outcome: Outcome) -> Outcome:
        """The gate sees an admitted call's outcome; a push provider's unregistered tokens are forgotten."""
        if isinstance(outcome, Crashed) or (isinstance(outcome, PermanentFailure) and outcome.dead_letter):
            # A crash or content refused before it reached the provider: no word on its health.
            await self.gate.abandon(delivery)
            return outcome
        # a client's I/O error (RetryLater) counts against the breaker; a throttled one holds the bucket instead
        await self.gate.settle(delivery, outcome)
        if outcome.unregistered_tokens and self.devices is not None:
            await self.devices.forget_devices(delivery.user_id, outcome.unregistered_tokens)
        return outcome

    def _resend(self, outcome: Outcome, waited: float, resends: int) -> bool:
        """A throttled verdict that is sent again in place after its wait (see the module's docstring)."""
        return (isinstance(outcome, RetryLater) and outcome.throttled and outcome.after_s is not None and not outcome.recipient
                and waited + outcome.after_s <= self.throttle_wait_s and resends < MAX_THROTTLED_RESENDS)

    async def _resend_throttled(self, delivery: Delivery, outcome: Outcome) -> Outcome:
        """Send again after each throttled verdict's wait, while `_resend` says so; the last outcome."""
        waited, resends = 0.0, 0  # throttled verdicts' waits so far, and the sends again after them
        while self._resend(outcome, waited, resends):
            assert isinstance(outcome, RetryLater) and outcome.after_s is not None
            waited += outcome.after_s
            resends += 1
            self.throttled_resends += 1
            outcome = await self._call_once(delivery)
        return outcome

    async def _sent_status(self, delivery: Delivery) -> str | None:
        """The send ledger's word on a maybe-sent delivery. The bulk lane's lookups go at most BULK_LOOKUPS at a time
        (the Store serves a few reads at once anyway), so a critical lookup, which goes at once, finds
        few bulk ones ahead of it at the Store, not every bulk attempt in flight (after a start, the first window of
        every lane partition is maybe-sent)."""
        def lookup() -> Awaitable[str | None]:
            return self.ledger.sent_status(delivery.notification_id, self.channel.value)

        if delivery.priority.lane is Lane.CRITICAL:
            return await until_available(lookup, self._ledger_what, self._ledger_waited)
        async with self._bulk_lookups:
            return await until_available(lookup, self._ledger_what, self._ledger_waited)

    @property
    def _ledger_what(self) -> str:
        return f"the {self.channel.value} provider's send ledger"

    def _ledger_waited(self, exc: PortUnavailable) -> None:
        self.ledger_waits += 1

    def _client_raised(self, delivery: Delivery, exc: Exception) -> Outcome:
        """The outcome of an attempt whose client raised: transient I/O is retried, anything else is a crash."""
        self.client_errors += 1
        error = f"{self.channel.value} client raised {exc!r}"[:1000]
        if isinstance(exc, OSError):
            log.warning("%s client I/O failed on %s: %r", self.channel.value, delivery.notification_id, exc)
            return RetryLater(error)
        log.error("%s client crashed on %s", self.channel.value, delivery.notification_id, exc_info=exc)
        return Crashed(error)
