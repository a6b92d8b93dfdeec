"""Provider: one per channel; owns the channel client, its token bucket and its breaker.

It takes Attempts in mailbox order and answers each with an Outcome. The `Gate` holds
rate limiting and circuit breaking: `admit` runs before the client is called (it waits
as long as the bucket or an open breaker says), `settle` sees every outcome. The gate's
bucket and breaker are shared, through the State, with the other workers of the same
provider (actors/services/gate.py); at stop the Provider gives back what its gate holds.

The send ledger makes redelivery safe: an Attempt that may have been tried before is
checked against it, and every send is written to it (durably) before the answer goes
back. The one duplicate left is a crash between the provider's answer and that write.

A circuits query (`CircuitQuery`, from GET /v1/admin/circuits) comes on a mailbox of its
own (`queries`) and is answered by a second task of the actor (`answer_queries`, supervised
beside `run`): the attempts may wait a minute for an open breaker, and the operator asks
precisely then. The answer is the
gate's view (`Gate.view`) and the Provider's counters.

A push provider's verdict that a device token is unregistered (the outcome's
`unregistered_tokens`) removes those tokens from the user's devices before the answer.

What a client raises is the attempt's outcome, never the Provider's crash: an OSError
(the client's own I/O: disk full, a refused connection) is RetryLater, anything else is
Crashed (the consumer retries it once and dead-letters it as poison if it crashes the
client again). A message's content can thus never use up the delivery stage's restart
intensity. The Provider itself crashes only on its own state's errors (the ledger, the
gate, the device store); its supervisor restarts it, and the consumer counts that crash
against the message as well, so a message that crashes it twice is dead-lettered.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any, Protocol

import trio

from protocol.api import CircuitView
from protocol.channels import Channel
from protocol.lifecycle import Status
from protocol.messages import Crashed, Delivery, Outcome, PermanentFailure, RetryLater, Sent
from reactor.ask import ActorCrashed
from reactor.clock import iso, wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Store

from .messages import Attempt, CircuitQuery
from .services.gate import GateView

log = logging.getLogger("herald.provider")


class ChannelClient(Protocol):
    """Talks to one provider. Returns the verdict (content it cannot send: PermanentFailure(dead_letter=True));
    an exception is taken as RetryLater (OSError) or Crashed (anything else)."""

    async def send(self, delivery: Delivery) -> Outcome: ...


class Devices(Protocol):
    async def forget_devices(self, user_id: str, tokens: Iterable[str]) -> int:
        """Remove device tokens a provider called unregistered; returns how many were registered."""


class Gate(Protocol):
    async def admit(self, delivery: Delivery) -> None: ...

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """See the outcome of an admitted call."""

    async def abandon(self, delivery: Delivery) -> None:
        """An admitted call ended with no outcome (the client crashed, or was cancelled); also called cancelled."""

    async def release(self) -> None:
        """The worker stops: give back what the gate holds (bounded; also called cancelled)."""

    async def view(self) -> GateView:
        """The breaker and bucket as GET /v1/admin/circuits shows them."""


class OpenGate:
    """No rate limit, no breaker: every attempt goes straight through."""

    async def admit(self, delivery: Delivery) -> None:
        return None

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        return None

    async def abandon(self, delivery: Delivery) -> None:
        return None

    async def release(self) -> None:
        return None

    async def view(self) -> GateView:
        return GateView("none", 0, 0, 0, math.inf, math.inf, math.inf, 0, 0, {}, None)


class Provider:
    def __init__(
        self, channel: Channel, client: ChannelClient, mailbox: Mailbox[Attempt], ledger: Store, gate: Gate | None = None,
        devices: Devices | None = None, queries: Mailbox[CircuitQuery] | None = None,
    ) -> None:
        self.channel = channel
        self.queries = queries
        self.devices = devices  # push: where unregistered tokens are removed
        self.client = client
        self.mailbox = mailbox
        self.ledger = ledger
        self.gate: Gate = gate or OpenGate()
        self.calls = 0
        self.suppressed = 0
        self.client_errors = 0  # client exceptions taken as outcomes (RetryLater or Crashed)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            async for attempt in self.mailbox:
                try:
                    outcome = await self._attempt(attempt)
                except Exception as exc:
                    log.exception("%s provider failed (its own state) on %s", self.channel.value, attempt.delivery.notification_id)
                    attempt.reply.fail(ActorCrashed(f"{self.channel.value} provider: {exc!r}"))
                    raise
                except BaseException:
                    attempt.reply.fail(ActorCrashed(f"{self.channel.value} provider stopped"))
                    raise
                attempt.reply.send(outcome)
        finally:
            await self.gate.release()  # the unspent slice goes back to the provider's other workers

    async def answer_queries(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
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
        )

    async def _attempt(self, attempt: Attempt) -> Outcome:
        delivery = attempt.delivery
        # A web frame is pushed again rather than suppressed: sessions drop an id they already
        # had, and after a restart a client may be resuming right now and need the push.
        if attempt.maybe_sent and self.channel is not Channel.WEB:
            status = await self.ledger.sent_status(delivery.notification_id, self.channel.value)
            if status is not None:
                self.suppressed += 1
                return Sent(Status(status), "already sent (send ledger): not sent again")
        await self.gate.admit(delivery)
        self.calls += 1
        try:
            outcome = await self.client.send(delivery)
        except Exception as exc:
            outcome = self._client_raised(delivery, exc)
        except BaseException:
            await self.gate.abandon(delivery)  # a cancellation says nothing about the provider's health
            raise
        if isinstance(outcome, Crashed) or (isinstance(outcome, PermanentFailure) and outcome.dead_letter):
            # A crash or content refused before it reached the provider: no word on its health.
            await self.gate.abandon(delivery)
            return outcome
        await self.gate.settle(delivery, outcome)  # a client's I/O error (RetryLater) counts against the breaker
        if isinstance(outcome, (Sent, PermanentFailure)) and outcome.unregistered_tokens and self.devices is not None:
            await self.devices.forget_devices(delivery.user_id, outcome.unregistered_tokens)
        if isinstance(outcome, Sent) and self.channel is not Channel.WEB:  # a web send is never looked up (above)
            await self.ledger.mark_sent(delivery.notification_id, self.channel.value, outcome.status.value, wall_ms())
        return outcome

    def _client_raised(self, delivery: Delivery, exc: Exception) -> Outcome:
        """The outcome of an attempt whose client raised: transient I/O is retried, anything else is a crash."""
        self.client_errors += 1
        error = f"{self.channel.value} client raised {exc!r}"[:1000]
        if isinstance(exc, OSError):
            log.warning("%s client I/O failed on %s: %r", self.channel.value, delivery.notification_id, exc)
            return RetryLater(error)
        log.error("%s client crashed on %s", self.channel.value, delivery.notification_id, exc_info=exc)
        return Crashed(error)
