"""A Provider runs up to max_in_flight attempts at once, never two of one user's at once, each user's in mailbox order.

Property (Hypothesis, under MockClock): random attempts of a few users, each call taking a
random simulated time, all queued in the Provider's mailbox at once; the client records
every call. Checked: (1) never more than `max_in_flight` calls at once; (2) never two of one
user's at once, and each user's calls in mailbox order; (3) the concurrency is used: every
user whose first attempt is among the first `max_in_flight` starts it at the first
instant, so at least that many calls (those that take time) run at once; (4) every attempt is answered, and
nothing is held once all are (a user with nothing in flight holds nothing).

The same property runs against deliberately broken Providers, and fails on each: one
without the per-user queue, one that runs one more call than its limit, and a serial one.

Both ways a Provider serves: a task per user's queue (a client with `send` only), and a batch
of users per task (a client that takes batches, `send_many`: the sandbox sinks); for the second
the calls of one batch all start at once and each ends when the batch does (its longest call),
and the broken Providers include batching ones: slots not taken per attempt, no queue per user,
a user's attempts taken newest first.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from actors.messages import Attempt
from actors.provider import Provider, _LaneSlots, _Run
from protocol.channels import Channel, Lane
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, Outcome, Sent
from reactor.ask import Reply
from reactor.mailbox import Mailbox
from tests.helpers import MemoryLedger


@dataclass
class Recording:
    """The client: records each call's user, order and overlap; a call takes the time its scenario says."""

    durations: dict[str, float]
    in_flight: dict[str, str] = field(default_factory=dict)  # notification id -> user
    peak: int = 0
    same_user_at_once: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # notification ids in call order

    async def send(self, delivery: Delivery) -> Outcome:
        if delivery.user_id in self.in_flight.values():
            self.same_user_at_once.append(delivery.user_id)
        self.in_flight[delivery.notification_id] = delivery.user_id
        self.peak = max(self.peak, len(self.in_flight))
        self.started.append(delivery.notification_id)
        try:
            await trio.sleep(self.durations[delivery.notification_id])
        finally:
            del self.in_flight[delivery.notification_id]
        return Sent()


@dataclass
class BatchRecording(Recording):
    """The same records, for a client that takes batches: a batch's calls start together and last as long as its
    longest one."""

    sends_many = True
    batches: list[int] = field(default_factory=list)  # each call's size

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        self.batches.append(len(deliveries))
        for delivery in deliveries:
            if delivery.user_id in self.in_flight.values():
                self.same_user_at_once.append(delivery.user_id)
            self.in_flight[delivery.notification_id] = delivery.user_id
            self.started.append(delivery.notification_id)
        self.peak = max(self.peak, len(self.in_flight))
        try:
            await trio.sleep(max(self.durations[d.notification_id] for d in deliveries))
        finally:
            for delivery in deliveries:
                del self.in_flight[delivery.notification_id]
        return [Sent() for _ in deliveries]


CLIENTS = {"per-user-task": Recording, "batches": BatchRecording}


@dataclass(frozen=True)
class Scenario:
    max_in_flight: int
    attempts: tuple[tuple[int, float], ...]  # (user, call duration), in mailbox order


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    users = draw(st.integers(1, 12))
    durations = st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0.0, 2.0)
    return Scenario(
        max_in_flight=draw(st.sampled_from([1, 2, 4, 8]) | st.integers(1, 16)),
        attempts=tuple(draw(st.lists(st.tuples(st.integers(0, users - 1), durations), max_size=60))),
    )


def delivery(n: int, user: int) -> Delivery:
    return Delivery(f"n{n:04d}", f"user{user}", Channel.SMS, 0, Content(sms=SmsContent("hi")), address="+15555550100")


async def run_scenario(s: Scenario, provider_class: type[Provider], client_class: type[Recording] = Recording,
                       ) -> tuple[Recording, Provider, list[Any]]:
    deliveries = [delivery(n, user) for n, (user, _) in enumerate(s.attempts)]
    client = client_class({d.notification_id: duration for d, (_, duration) in zip(deliveries, s.attempts, strict=True)})
    mailbox: Mailbox[Attempt] = Mailbox("provider:sms", max(1, len(deliveries)))
    provider = provider_class(Channel.SMS, client, mailbox, MemoryLedger(), max_in_flight=s.max_in_flight)  # type: ignore[arg-type]
    replies: list[Reply[Outcome]] = []
    for d in deliveries:  # all queued before the Provider reads any
        reply: Reply[Outcome] = Reply()
        replies.append(reply)
        await mailbox.send(Attempt(d, reply, maybe_sent=False))
    answers: list[Any] = []
    with trio.fail_after(1 + sum(duration for _, duration in s.attempts) * 2):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run)
            for reply in replies:
                answers.append(await reply.wait())
            mailbox.close()
    return client, provider, answers


def provider_property(provider_class: type[Provider], client_class: type[Recording] = Recording, **overrides: Any) -> Any:
    @given(scenarios())
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], **overrides)
    def check(s: Scenario) -> None:
        client, provider, answers = trio.run(run_scenario, s, provider_class, client_class,
                                             clock=trio.testing.MockClock(autojump_threshold=0))
        assert len(answers) == len(s.attempts) and all(isinstance(a, Sent) for a in answers)
        assert client.peak <= s.max_in_flight, f"{client.peak} calls at once, max_in_flight {s.max_in_flight}"
        assert not client.same_user_at_once, f"two calls of one user at once: {client.same_user_at_once}"
        per_user: dict[int, list[str]] = {}
        for n, (user, _) in enumerate(s.attempts):
            per_user.setdefault(user, []).append(f"n{n:04d}")
        for user, ids in per_user.items():
            assert [i for i in client.started if i in set(ids)] == ids, f"user{user}'s calls out of mailbox order"
        # Every user whose first attempt is among the first max_in_flight starts it at time 0; those that take time overlap.
        firsts: dict[int, float] = {}
        for user, duration in s.attempts:
            firsts.setdefault(user, duration)
        early = {user for user, _ in s.attempts[: s.max_in_flight] if firsts[user] > 0}
        assert client.peak >= len(early), f"{client.peak} calls at once; {len(early)} users could all start at once"
        assert not provider._queues and provider.in_flight == 0 and provider.queued == 0, "held after every attempt was answered"

    return check


@pytest.mark.parametrize("client", CLIENTS)
def test_a_provider_runs_users_at_once_each_user_in_order_within_max_in_flight(client: str) -> None:
    provider_property(Provider, CLIENTS[client], max_examples=150)()


def test_a_batching_client_is_served_in_batches() -> None:
    """The batch path is the one taken (not a task per user with a client that also batches): fewer calls than attempts."""
    s = Scenario(4, tuple((user, 1.0) for user in range(8)))
    client, provider, answers = trio.run(run_scenario, s, Provider, BatchRecording, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(answers) == 8 and provider.calls == 8 and provider.batches == 2 and client.peak == 4


# -- broken providers: the property catches each ----------------------------------------


class NoQueuePerUser(Provider):
    """Runs every attempt as soon as a slot is free, whoever's it is."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        slots = trio.Semaphore(self.max_in_flight)
        task_status.started()

        async def one(attempt: Attempt) -> None:
            async with slots:
                attempt.reply.send(await self._attempt(attempt))

        async with trio.open_nursery() as nursery:
            async for attempt in self.mailbox:
                nursery.start_soon(one, attempt)


class OneOverTheLimit(Provider):
    def __init__(self, *args: Any, max_in_flight: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, max_in_flight=max_in_flight + 1, **kwargs)


class Serial(Provider):
    def __init__(self, *args: Any, max_in_flight: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, max_in_flight=1, **kwargs)


class LastInFirstOutPerUser(Provider):
    """Takes a user's newest attempt first: each user's own calls never overlap, but run out of bus order."""

    async def _serve_user(self, user: str, *args: Any) -> None:
        queue = self._queues[user]
        await trio.lowlevel.checkpoint()  # let the rest of the user's attempts be queued first
        self._queues[user] = deque(reversed(queue))
        await super()._serve_user(user, *args)


class BatchIgnoresTheSlots(Provider):
    """Collects its batches without the running slots (the Provider's and the lane's): only the lane's holding limit
    (2 x max_in_flight taken from the mailbox) bounds them."""

    async def _serve_batch(self, lane: Lane, run: _Run) -> None:
        lanes = {name: _LaneSlots(slots.holding, None) for name, slots in run.lanes.items()}
        await super()._serve_batch(lane, dataclasses.replace(run, running=trio.Semaphore(10**6), lanes=lanes))


class NoQueuePerUserInBatches(Provider):
    """Queues each attempt on its own (by notification id): two of one user's may be in one batch, or two at once."""

    async def _queue(self, attempt: Attempt, *args: Any) -> None:
        await super()._queue(attempt, *args)
        key = (attempt.delivery.user_id, attempt.delivery.priority.lane)
        queue = self._queues.get(key)
        if queue is not None and len(queue) > 1:  # split the user's queue: its newest attempt runs as a user of its own
            newest = queue.pop()
            alone = (f"{key[0]}#{newest.delivery.notification_id}", key[1])
            self._queues[alone] = deque([newest])
            self._make_ready(alone)


class LastInFirstOutInBatches(Provider):
    """Takes a user's newest attempt next when the user is ready again: each user's own calls never overlap, but run
    out of bus order."""

    def _make_ready(self, key: tuple[str, Lane]) -> None:
        self._queues[key] = deque(reversed(self._queues[key]))
        super()._make_ready(key)


HUNT = dict(max_examples=150, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
            print_blob=False)


@pytest.mark.parametrize("broken", [NoQueuePerUser, OneOverTheLimit, Serial, LastInFirstOutPerUser], ids=lambda c: c.__name__)
def test_the_property_catches_a_broken_provider(broken: type[Provider]) -> None:
    with pytest.raises(AssertionError):
        provider_property(broken, **HUNT)()


@pytest.mark.parametrize("broken", [NoQueuePerUser, OneOverTheLimit, Serial, BatchIgnoresTheSlots, NoQueuePerUserInBatches,
                                    LastInFirstOutInBatches], ids=lambda c: c.__name__)
def test_the_property_catches_a_broken_batching_provider(broken: type[Provider]) -> None:
    with pytest.raises(AssertionError):
        provider_property(broken, BatchRecording, **HUNT)()


@pytest.mark.parametrize("client", CLIENTS)
def test_the_real_provider_passes_the_hunting_settings_too(client: str) -> None:
    provider_property(Provider, CLIENTS[client], **HUNT)()
