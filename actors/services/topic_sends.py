"""Topic sends as the API accepts them: a fan-out job in the Store, durable before the 202 (actors/fanout.py expands it)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from protocol.api import NotificationRequest
from reactor.clock import wall_ms
from reactor.ports import FanoutJob, Store

_encode = msgspec.json.Encoder().encode


class TopicSends:
    """Writes a topic send's job, then tells the fan-out actors of this process (others find it by polling the Store)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.listeners: list[Callable[[], None]] = []  # each local fan-out actor's wake()
        self.accepted = 0

    async def accept(self, nid: str, request: NotificationRequest) -> None:
        assert request.topic is not None
        total = await self.store.subscriber_count(request.topic)  # the audience as the send is accepted (the status shows it)
        await self.store.add_fanout(FanoutJob(nid, request.topic, _encode(request), wall_ms(), total))
        self.accepted += 1
        for wake in self.listeners:
            wake()
