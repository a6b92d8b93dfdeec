"""The web Provider serves its ready users in batches (the batch path of actors/provider.py: the web client takes
batches): one task and one client call (`send_many`, one Broker publish) for up to BATCH_MAX users, instead of a
task and a call each (docs/performance.md, "Broadcast to 10,000 sessions").

The concurrency property of test_provider_concurrency.py holds for pages too (never more than max_in_flight
deliveries at once, never two of one user's at once, each user's in mailbox order, every attempt answered
once, nothing held after); a page whose gate hands out the breaker's half-open probe sends that delivery
alone before admitting the next (the next admission waits for the probe to end: a page sent only after
every admission would wait for ever).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from actors.clients.web import WebClient
from actors.messages import Attempt
from actors.provider import BATCH_MAX as PAGE
from actors.provider import Provider
from actors.registry import RecentPushes
from protocol.channels import Channel
from protocol.content import Content, WebContent
from protocol.messages import Delivery, Outcome, Sent, decode_fanout
from reactor.ask import Reply
from reactor.backends.embedded import MemoryBroker, MemoryState
from reactor.mailbox import Mailbox
from tests.actors.test_provider_concurrency import Scenario, scenarios
from tests.helpers import MemoryLedger


def web_delivery(n: int, user: int) -> Delivery:
    return Delivery(f"n{n:04d}", f"user{user}", Channel.WEB, 0, Content(web=WebContent("hi", "there")))


@dataclass
class PageRecording:
    """A web client that serves pages only: records each call's deliveries and the overlap; a page takes the longest
    of its deliveries' times."""

    durations: dict[str, float]
    in_flight: dict[str, str] = field(default_factory=dict)  # notification id -> user
    peak: int = 0
    same_user_at_once: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)  # each call's size
    sends_many = True  # served in batches (actors/provider.py BatchClient)

    async def send(self, delivery: Delivery) -> Outcome:
        return (await self.send_many([delivery]))[0]

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        self.pages.append(len(deliveries))
        for d in deliveries:
            if d.user_id in self.in_flight.values():
                self.same_user_at_once.append(d.user_id)
            self.in_flight[d.notification_id] = d.user_id
            self.started.append(d.notification_id)
        self.peak = max(self.peak, len(self.in_flight))
        try:
            await trio.sleep(max(self.durations[d.notification_id] for d in deliveries))
        finally:
            for d in deliveries:
                del self.in_flight[d.notification_id]
        return [Sent() for _ in deliveries]


async def run_pages(s: Scenario) -> tuple[PageRecording, Provider, list[Any]]:
    deliveries = [web_delivery(n, user) for n, (user, _) in enumerate(s.attempts)]
    client = PageRecording({d.notification_id: duration for d, (_, duration) in zip(deliveries, s.attempts, strict=True)})
    mailbox: Mailbox[Attempt] = Mailbox("provider:web", max(1, len(deliveries)))
    provider = Provider(Channel.WEB, client, mailbox, MemoryLedger(), max_in_flight=s.max_in_flight)  # type: ignore[arg-type]
    replies: list[Reply[Outcome]] = []
    for d in deliveries:
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


@given(scenarios())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)
def test_pages_keep_max_in_flight_and_each_users_order(s: Scenario) -> None:
    client, provider, answers = trio.run(run_pages, s, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(answers) == len(s.attempts) and all(isinstance(a, Sent) for a in answers)
    assert client.peak <= s.max_in_flight, f"{client.peak} deliveries at once, max_in_flight {s.max_in_flight}"
    assert not client.same_user_at_once, f"two of one user's at once: {client.same_user_at_once}"
    per_user: dict[int, list[str]] = {}
    for n, (user, _) in enumerate(s.attempts):
        per_user.setdefault(user, []).append(f"n{n:04d}")
    for user, ids in per_user.items():
        assert [i for i in client.started if i in set(ids)] == ids, f"user{user}'s out of mailbox order"
    assert sorted(client.started) == sorted(f"n{n:04d}" for n in range(len(s.attempts))), "each sent once"
    assert not provider._queues and provider.in_flight == 0 and provider.queued == 0, "held after every attempt was answered"


async def test_a_read_of_many_users_goes_out_in_pages_of_one_publish_each() -> None:
    users = 3 * PAGE + 5
    broker = MemoryBroker()
    calls: list[int] = []
    plain = broker.publish_many

    async def counted(messages: Sequence[tuple[str, bytes]]) -> list[int]:
        calls.append(len(messages))
        return await plain(messages)

    broker.publish_many = counted  # type: ignore[method-assign]
    client = WebClient(broker, RecentPushes(MemoryState()))
    mailbox: Mailbox[Attempt] = Mailbox("provider:web", users)
    provider = Provider(Channel.WEB, client, mailbox, MemoryLedger(), max_in_flight=4 * PAGE)
    replies: list[Reply[Outcome]] = []
    async with broker.subscriber() as node:
        for u in range(users):
            await node.subscribe(f"user{u}")
        for u in range(users):
            reply: Reply[Outcome] = Reply()
            replies.append(reply)
            await mailbox.send(Attempt(web_delivery(u, u), reply, maybe_sent=False))
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run)
            answers = [await reply.wait() for reply in replies]
            mailbox.close()
        got = []
        async for user_id, raw in node.messages():
            got.append((user_id, decode_fanout(raw).id))
            if len(got) == users:
                break
    assert all(isinstance(a, Sent) and "1 node" in a.detail for a in answers)
    assert sorted(got) == sorted((f"user{u}", f"n{u:04d}") for u in range(users)), "each user's frame reached the node once"
    assert sum(calls) == users and len(calls) <= users // PAGE + 1, f"publish calls of {calls}: not pages"
    assert provider.calls == users


class ProbingGate:
    """A gate whose first admission takes the breaker's half-open probe: every later admission waits until it is settled."""

    def __init__(self) -> None:
        self.probe: Delivery | None = None
        self.probed = False
        self.settled = trio.Event()
        self.order: list[str] = []

    def admit_nowait(self, delivery: Delivery) -> bool:
        """As the real gate: never while the probe is out (nor before it was handed out: the first goes through admit)."""
        if not self.probed or self.probe is not None:
            return False
        self.order.append(f"admit {delivery.notification_id}")
        return True

    async def admit(self, delivery: Delivery) -> None:
        if not self.probed:
            self.probed, self.probe = True, delivery
        else:
            await self.settled.wait()
        self.order.append(f"admit {delivery.notification_id}")

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        self.order.append(f"settle {delivery.notification_id}")
        if delivery is self.probe:
            self.probe = None
            self.settled.set()

    async def abandon(self, delivery: Delivery) -> None:
        await self.settle(delivery, Sent())

    async def release(self) -> None:
        return None

    async def view(self) -> Any:
        raise NotImplementedError


async def test_a_page_sends_the_probe_alone_before_the_next_admission() -> None:
    client = PageRecording({f"n{n:04d}": 0.0 for n in range(5)})
    gate = ProbingGate()
    mailbox: Mailbox[Attempt] = Mailbox("provider:web", 5)
    provider = Provider(Channel.WEB, client, mailbox, MemoryLedger(), gate, max_in_flight=8)  # type: ignore[arg-type]
    replies: list[Reply[Outcome]] = []
    for n in range(5):
        reply: Reply[Outcome] = Reply()
        replies.append(reply)
        await mailbox.send(Attempt(web_delivery(n, n), reply, maybe_sent=False))
    with trio.fail_after(5):  # a page that admits all before sending the probe never ends
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run)
            for reply in replies:
                assert isinstance(await reply.wait(), Sent)
            mailbox.close()
    assert client.pages[0] == 1 and sum(client.pages) == 5, client.pages
    assert gate.order[:2] == ["admit n0000", "settle n0000"], gate.order
