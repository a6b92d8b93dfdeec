"""Failover: a channel with several providers sends each delivery through the first that can take it.

The members are tried in the configured order, one at a time (never one delivery through
two at once), each behind a gate of its own (its token bucket and breaker, shared through
the State under its own key: `gate:<channel>.<name>:...`). A member is passed over when
its breaker is open (or another worker holds its half-open probe), when it is throttled
for longer than `max_pause_s` (a throttled verdict's pause, or the answer itself), or when
it answers a retryable error; the next member sends. The last member is waited for as a
lone provider would be. A permanent verdict, a crash, or a throttled one within
`max_pause_s`, ends the delivery's turn where it is (the content's fault is the same
everywhere; a short throttle is waited for by the Provider, which sends it again).

When an open breaker's timeout runs out, the next delivery is its half-open probe: a
primary that is back gets its traffic again once the probe succeeds and its breaker closes.

The verdict names the member that gave it (`via <name>: ...`; the errors of those passed
over follow), so the status timeline shows which provider sent each delivery. The Provider
writes the send ledger for the channel whichever member sent, so a delivery sent through the
secondary is not sent again through the primary on a redelivery.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from protocol.messages import Crashed, Delivery, Outcome, PermanentFailure, RetryLater, Sent

from ..provider import ChannelClient, OpenGate
from ..services.gate import GateView

log = logging.getLogger("herald.failover")


class MemberGate(Protocol):
    throttled: int
    deferred: int

    async def admit(self, delivery: Delivery) -> None: ...

    async def admit_or_pass(self, delivery: Delivery, max_pause_s: float) -> bool: ...

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None: ...

    async def abandon(self, delivery: Delivery) -> None: ...

    async def release(self) -> None: ...

    async def view(self) -> GateView: ...


@dataclass
class Member:
    name: str
    client: ChannelClient
    gate: MemberGate
    sent: int = 0
    passed: int = 0  # deliveries it did not take: breaker open, throttled beyond the wait
    failed_over: int = 0  # deliveries it answered with a retryable error, sent on to the next


@dataclass
class FailoverClient:
    """A ChannelClient over an ordered list of providers (two or more)."""

    channel: str
    members: Sequence[Member]
    max_pause_s: float = 60.0

    async def send(self, delivery: Delivery) -> Outcome:
        passed: list[str] = []  # what the members before the one that answered said
        gone: list[str] = []
        for n, member in enumerate(self.members):
            last = n == len(self.members) - 1
            if last:
                await member.gate.admit(delivery)
            elif not await member.gate.admit_or_pass(delivery, self.max_pause_s):
                member.passed += 1
                passed.append(f"{member.name}: passed over (breaker open or throttled)")
                continue
            try:
                outcome = await member.client.send(delivery)
            except BaseException:
                await member.gate.abandon(delivery)  # the Provider takes the exception as the outcome; no failover
                raise
            if isinstance(outcome, Crashed) or (isinstance(outcome, PermanentFailure) and outcome.dead_letter):
                await member.gate.abandon(delivery)
                return outcome
            await member.gate.settle(delivery, outcome)
            gone += outcome.unregistered_tokens
            if not last and isinstance(outcome, RetryLater) and not outcome.recipient and (
                not outcome.throttled or outcome.after_s is None or outcome.after_s > self.max_pause_s
            ):  # a recipient's failure would be the same through any provider
                member.failed_over += 1
                passed.append(f"{member.name}: {outcome.error}")
                log.info("%s %s: %s answered %s; sending through the next provider", self.channel, delivery.notification_id,
                         member.name, outcome.error[:200])
                continue
            if isinstance(outcome, Sent):
                member.sent += 1
            return _named(outcome, member.name, passed, gone)
        raise AssertionError("the last member always answers")  # pragma: no cover

    def counts(self) -> dict[str, dict[str, int]]:
        return {m.name: {"sent": m.sent, "passed": m.passed, "failed_over": m.failed_over} for m in self.members}


class FailoverGate(OpenGate):
    """The Provider's gate on a failover channel: open (each member has its own), but what the operator reads of the
    channel is its providers' gates: GET /v1/admin/circuits and /metrics show the first provider's breaker and bucket,
    the members' counts summed, and every member's transitions named (`twilio-1:closed->open`)."""

    def __init__(self, members: Sequence[Member]) -> None:
        super().__init__()
        self.members = members

    @property
    def throttled(self) -> int:
        return sum(m.gate.throttled for m in self.members)

    @property
    def deferred(self) -> int:
        return sum(m.gate.deferred for m in self.members)

    async def view(self) -> GateView:
        views = [await m.gate.view() for m in self.members]
        transitions = {f"{m.name}:{key}": count for m, v in zip(self.members, views) for key, count in v.transitions.items()}
        return dataclasses.replace(views[0], deferred=self.deferred, throttled=self.throttled, transitions=transitions)

    async def release(self) -> None:
        for member in self.members:
            await member.gate.release()


def _named(outcome: Outcome, name: str, passed: list[str], gone: list[str]) -> Outcome:
    """The verdict, naming the member that gave it and what the ones before it said."""
    before = f" (before: {'; '.join(passed)})" if passed else ""
    tokens = list(dict.fromkeys(gone))
    if isinstance(outcome, Sent):
        return msgspec.structs.replace(outcome, detail=f"via {name}: {outcome.detail}{before}"[:1000], unregistered_tokens=tokens)
    if isinstance(outcome, (RetryLater, PermanentFailure)):
        return msgspec.structs.replace(outcome, error=f"via {name}: {outcome.error}{before}"[:1000], unregistered_tokens=tokens)
    return outcome
