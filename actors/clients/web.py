"""The web channel client: pushes a frame to the user's live sessions through the registry.

Its outcome is always `sent`: the notification is in the user's inbox (the consumer records
the entry with it) whether or not a session was live. A client that sees it makes it
`delivered` (a WebSocket ack, an SSE event or a long-poll answer: actors/api/realtime.py).
"""

from __future__ import annotations

from protocol.frames import NotificationFrame, frame_encoder
from protocol.lifecycle import Status
from protocol.messages import Delivery, InboxEntry, Outcome, PermanentFailure, Sent
from reactor.ask import ask
from reactor.clock import iso
from reactor.mailbox import Mailbox

from ..messages import Push, Register, Unregister


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


class WebClient:
    def __init__(self, registry: Mailbox[Register | Unregister | Push]) -> None:
        self.registry = registry

    async def send(self, delivery: Delivery) -> Outcome:
        if delivery.content.web is None:
            return PermanentFailure("no web content")
        frame = notification_frame(inbox_entry(delivery, 0))
        reached = await ask(self.registry.send, lambda reply: Push(delivery.user_id, delivery.notification_id, frame, reply))
        # `sent` is final for web: the consumer stores the inbox entry with this outcome (protocol.lifecycle)
        if reached:
            return Sent(Status.SENT, detail=f"in the inbox; pushed to {reached} live session(s)")
        return Sent(Status.SENT, detail="in the inbox; no live session")
