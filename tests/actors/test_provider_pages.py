"""The web Provider serves its ready users in batches (the batch path of actors/provider.py: the web client takes
batches): one task and one client call (`send_many`, one Broker publish) for up to BATCH_MAX users, instead of a
task and a call each (docs/performance.md, "Broadcast to 10,000 sessions").

The concurrency property holds for batches too (test_provider_concurrency.py runs it with a batching client); a
page whose gate hands out the breaker's half-open probe sends that delivery
alone before admitting the next (the next admission waits for the probe to end: a page sent only after
every admission would wait for ever).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

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
from tests.actors.test_provider_concurrency import BatchRecording
from tests.helpers import MemoryLedger


def web_delivery(n: int, user: int) -> Delivery:
    return Delivery(f"n{n:04d}", f"user{user}", Channel.WEB, 0, Content(web=WebContent("hi", "there")))


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
    client = BatchRecording({f"n{n:04d}": 0.0 for n in range(5)})
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
    assert client.batches[0] == 1 and sum(client.batches) == 5, client.batches
    assert gate.order[:2] == ["admit n0000", "settle n0000"], gate.order
