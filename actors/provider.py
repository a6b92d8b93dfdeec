"""Provider: one per channel; owns the channel client and (next) its token bucket and breaker.

It takes Attempts in mailbox order and answers each with an Outcome. The `Gate` is
the seam where rate limiting and circuit breaking sit: `admit` runs before the client
is called (it may wait), `settle` sees every outcome.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from protocol.channels import Channel
from protocol.messages import Delivery, Outcome
from reactor.ask import ActorCrashed
from reactor.mailbox import Mailbox

from .messages import Attempt

log = logging.getLogger("herald.provider")


class ChannelClient(Protocol):
    """Talks to one provider. Returns the verdict; raises only on a bug (a poison message)."""

    async def send(self, delivery: Delivery) -> Outcome: ...


class Gate(Protocol):
    async def admit(self, delivery: Delivery) -> None: ...

    def settle(self, delivery: Delivery, outcome: Outcome) -> None: ...


class OpenGate:
    """No rate limit, no breaker: every attempt goes straight through."""

    async def admit(self, delivery: Delivery) -> None:
        return None

    def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        return None


class Provider:
    def __init__(self, channel: Channel, client: ChannelClient, mailbox: Mailbox[Attempt], gate: Gate | None = None) -> None:
        self.channel = channel
        self.client = client
        self.mailbox = mailbox
        self.gate: Gate = gate or OpenGate()
        self.calls = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for attempt in self.mailbox:
            try:
                await self.gate.admit(attempt.delivery)
                self.calls += 1
                outcome = await self.client.send(attempt.delivery)
                self.gate.settle(attempt.delivery, outcome)
            except Exception as exc:
                log.exception("%s client failed on %s", self.channel.value, attempt.delivery.notification_id)
                attempt.reply.fail(ActorCrashed(f"{self.channel.value} provider: {exc!r}"))
                raise
            except BaseException:
                attempt.reply.fail(ActorCrashed(f"{self.channel.value} provider stopped"))
                raise
            attempt.reply.send(outcome)
