"""Faults for the sandbox providers: a wrapper that makes a sandbox client slow or failing, on demand.

`SandboxFaults.around(clients, ...)` wraps each sandbox client (the email outbox, the
SMS and push sinks) in a `FaultyClient`; any other client (the web channel, a client a
test or an embedder passes in) is left alone: faults are a sandbox feature, to see
retries, backoff, the breaker and the dead-letter queue at work without a real provider.

A call through a FaultyClient first waits `latency_ms`, then fails if an outage window
(`fail_for_s` from when the setting took effect) is running, or with probability
`error_rate` (a `random.Random` seeded from the setting's `seed` and the channel, so a
setting fails the same calls each time it is applied); otherwise the sandbox client
does its work. A failed call never reaches the sandbox client and answers RetryLater
or PermanentFailure as `kind` says. Time is Trio's clock: the whole thing runs under
MockClock.

Settings come from the config file (`[herald.faults.sms]`) at start and from
PUT/DELETE /v1/admin/sandbox/faults/{channel} (`herald sandbox faults`) at run time; a
setting changed at run time lasts until the next change or the node's restart.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from protocol.channels import Channel
from protocol.faults import NO_FAULT, FaultSpec, FaultView
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater
from reactor.clock import iso, wall_ms

from ..provider import ChannelClient, sends_many
from .sandbox import EmailOutbox, JsonLinesSink

log = logging.getLogger("herald.faults")

SANDBOX_CLIENTS = (EmailOutbox, JsonLinesSink)


def is_sandbox(client: object) -> bool:
    return isinstance(client, SANDBOX_CLIENTS)


@dataclass
class ChannelFaults:
    """One channel's setting from `since` (Trio time) on, and what it decided. The decision is pure: no I/O, no clock."""

    channel: Channel
    spec: FaultSpec
    since: float
    rng: random.Random = field(init=False)
    calls: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.spec.seed}:{self.channel.value}")

    @property
    def outage_until(self) -> float:
        return self.since + self.spec.fail_for_s

    def decide(self, now: float) -> str | None:
        """Why the call at `now` fails, or None if it goes through; counts it."""
        self.calls += 1
        if now < self.outage_until:
            reason = f"outage ({self.spec.fail_for_s:g} s from when it was set)"
        elif self.spec.error_rate > 0 and self.rng.random() < self.spec.error_rate:
            reason = f"error_rate {self.spec.error_rate:g}"
        else:
            return None
        self.failed += 1
        return f"sandbox fault on {self.channel.value} ({self.spec.kind}): {reason}"


def failure(spec: FaultSpec, error: str) -> Outcome:
    return RetryLater(error) if spec.kind == "retryable" else PermanentFailure(error)


class FaultyClient:
    """A sandbox client with a fault setting in front of it (a ChannelClient)."""

    def __init__(self, channel: Channel, inner: ChannelClient, spec: FaultSpec = NO_FAULT) -> None:
        self.channel = channel
        self.inner = inner
        self.state = ChannelFaults(channel, spec, trio.current_time())

    def apply(self, spec: FaultSpec) -> None:
        """Replace the setting; it takes effect now (an outage window starts now)."""
        self.state = ChannelFaults(self.channel, spec, trio.current_time())
        log.warning("%s sandbox faults: %s", self.channel.value, spec if spec.active else "cleared")

    async def send(self, delivery: Delivery) -> Outcome:
        state = self.state  # a change during the wait applies to the next call
        if state.spec.latency_ms > 0:
            await trio.sleep(state.spec.latency_ms / 1000)
        error = state.decide(trio.current_time())
        if error is not None:
            return failure(state.spec, error)
        return await self.inner.send(delivery)

    @property
    def sends_many(self) -> bool:
        return sends_many(self.inner)

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """`send` for a batch (actors/provider.py BatchClient): one latency for the batch, each call's fault decided as
        `send` decides it; the others go to the inner client in one batch."""
        state = self.state
        if state.spec.latency_ms > 0:
            await trio.sleep(state.spec.latency_ms / 1000)
        now = trio.current_time()
        failed: list[Outcome | None] = []
        for _ in deliveries:
            error = state.decide(now)
            failed.append(None if error is None else failure(state.spec, error))
        passing = [d for d, f in zip(deliveries, failed, strict=True) if f is None]
        answers = iter(await self.inner.send_many(passing) if passing else [])  # type: ignore[attr-defined]
        return [f if f is not None else next(answers) for f in failed]

    def view(self) -> FaultView:
        state, spec = self.state, self.state.spec
        now = trio.current_time()
        outage = None
        if now < state.outage_until:
            outage = iso(wall_ms() + int((state.outage_until - now) * 1000))
        return FaultView(
            channel=self.channel, error_rate=spec.error_rate, kind=spec.kind, latency_ms=spec.latency_ms,
            fail_for_s=spec.fail_for_s, seed=spec.seed, active=spec.active,
            since=iso(wall_ms() - int((now - state.since) * 1000)), outage_until=outage, calls=state.calls, failed=state.failed,
        )


class SandboxFaults:
    """The fault settings of a node's sandbox clients, by channel: what the admin route reads and changes."""

    def __init__(self) -> None:
        self.clients: dict[Channel, FaultyClient] = {}

    @classmethod
    def around(
        cls, clients: Mapping[Channel, ChannelClient], setting: Callable[[Channel], FaultSpec],
    ) -> tuple[SandboxFaults, dict[Channel, ChannelClient]]:
        """Wrap every sandbox client of `clients` with its channel's starting setting; the others as they are."""
        faults = cls()
        wrapped: dict[Channel, ChannelClient] = {}
        for channel, client in clients.items():
            if is_sandbox(client):
                wrapped[channel] = faults.clients[channel] = FaultyClient(channel, client, setting(channel))
                if setting(channel).active:  # a node that fails on purpose says so
                    log.warning("%s sandbox faults from the configuration: %s", channel.value, setting(channel))
            else:
                wrapped[channel] = client
                if setting(channel).active:
                    log.warning("faults for %s are ignored: its client is not a sandbox client", channel.value)
        return faults, wrapped

    def channels(self) -> list[Channel]:
        return [c for c in Channel if c in self.clients]

    def set(self, channel: Channel, spec: FaultSpec) -> FaultView:
        """KeyError if `channel` has no sandbox client."""
        client = self.clients[channel]
        client.apply(spec)
        return client.view()

    def views(self) -> list[FaultView]:
        return [self.clients[c].view() for c in self.channels()]
