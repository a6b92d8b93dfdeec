"""The web channel client: publishes a frame to the user's live sessions, wherever they are, through the Broker.

Its outcome is always `sent`: the notification is in the user's inbox (the consumer records
the entry with it) whether or not a session was live. A client that sees it makes it
`delivered` (a WebSocket ack, an SSE event or a long-poll answer: actors/api/realtime.py).

The frame is kept among the recent pushes first, then published (`push_frame`): a session
registering meanwhile finds it in one place or the other (actors/api/replay.py). The Broker
answers how many nodes hold a live session of the user, not how many sessions: the
producer does not see the sessions, which live on the edge nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from protocol.frames import NotificationFrame, frame_encoder
from protocol.lifecycle import Status
from protocol.messages import Delivery, InboxEntry, Outcome, PermanentFailure, Sent, encode_fanout
from reactor.clock import iso
from reactor.ports import Broker

from ..registry import RecentPushes


def inbox_entry(delivery: Delivery, seq: int) -> InboxEntry:
    web = delivery.content.web
    assert web is not None
    return InboxEntry(
        notification_id=delivery.notification_id,
        user_id=delivery.user_id,
        created_ms=delivery.created_ms,
        title=web.title,
        body=web.body,
        url=web.url,
        data=delivery.data,
        seq=seq,
    )


def notification_frame(entry: InboxEntry) -> bytes:
    return frame_encoder.encode(
        NotificationFrame(
            id=entry.notification_id,
            created_at=iso(entry.created_ms),
            title=entry.title,
            body=entry.body,
            url=entry.url,
            data=entry.data,
        )
    )


async def push_frame(broker: Broker, recent: RecentPushes, user_id: str, notification_id: str, frame: bytes) -> int:
    """Keep the frame among the recent pushes, then publish it; returns the nodes holding a live session of the user."""
    await recent.remember(user_id, notification_id, frame)
    return await broker.publish(user_id, encode_fanout("notification", notification_id, frame))


class WebClient:
    def __init__(self, broker: Broker, recent: RecentPushes, one_by_one: bool = True) -> None:
        self.broker = broker
        self.recent = recent
        # A batch's recent pushes kept one after another where none waits (State and Broker in this process: no task
        # per push); at once where each is a round trip (Redis), as the Provider's task per user made them. The node
        # says which from its configuration (actors/app.py).
        self.one_by_one = one_by_one

    sends_many = True  # actors/provider.py BatchClient

    async def send(self, delivery: Delivery) -> Outcome:
        if delivery.content.web is None:
            return PermanentFailure("no web content")
        frame = notification_frame(inbox_entry(delivery, 0))
        return _sent(await push_frame(self.broker, self.recent, delivery.user_id, delivery.notification_id, frame))

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """`send` for a batch of deliveries (the Provider's, of different users): each frame kept among its user's recent
        pushes, then all published in one Broker call (`publish_many`), so each is still kept before it is published.
        The recent pushes are kept one after another where nothing waits (in-process), at once where each is a round
        trip (Redis)."""
        outcomes: list[Outcome] = []
        published: list[int] = []  # where each published one's outcome goes
        kept: list[tuple[str, str, bytes]] = []
        messages: list[tuple[str, bytes]] = []
        for delivery in deliveries:
            if delivery.content.web is None:
                outcomes.append(PermanentFailure("no web content"))
                continue
            frame = notification_frame(inbox_entry(delivery, 0))
            kept.append((delivery.user_id, delivery.notification_id, frame))
            published.append(len(outcomes))
            outcomes.append(_NOT_YET)
            messages.append((delivery.user_id, encode_fanout("notification", delivery.notification_id, frame)))
        if not messages:
            return outcomes
        if self.one_by_one:
            for user_id, notification_id, frame in kept:
                await self.recent.remember(user_id, notification_id, frame)
        else:
            async with trio.open_nursery() as nursery:
                for user_id, notification_id, frame in kept:
                    nursery.start_soon(self.recent.remember, user_id, notification_id, frame)
        for at, nodes in zip(published, await self.broker.publish_many(messages), strict=True):
            outcomes[at] = _sent(nodes)
        return outcomes


_NOT_YET = PermanentFailure("not published")  # a place held in send_many's answer, always replaced


def _sent(nodes: int) -> Outcome:
    # `sent` is final for web: the consumer stores the inbox entry with this outcome (protocol.lifecycle)
    if nodes:
        return Sent(Status.SENT, detail=f"in the inbox; pushed to the live sessions on {nodes} node(s)")
    return Sent(Status.SENT, detail="in the inbox; no live session")
