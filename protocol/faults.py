"""Sandbox faults: what a sandbox provider is told to do wrong, per channel. Pure data.

A setting makes the channel's sandbox client fail some calls (`error_rate`, 0 to 1),
fail every call for a while (`fail_for_s`, an outage window from when the setting takes
effect), and answer slowly (`latency_ms`, on every call). A failed call answers
`kind`: `retryable` (a provider's 503: retried with backoff, counts against the
breaker, dead-lettered after max_attempts) or `permanent` (a provider's 400: the channel
fails at once; the breaker counts it as the provider's sound answer). `seed` seeds the
choice of which calls fail, so a setting fails the same calls each time it is applied.

The same schema is the body of PUT /v1/admin/sandbox/faults/{channel} and a table
`[herald.faults.<channel>]` of the config file (actors/config.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .channels import Channel

FaultKind = Literal["retryable", "permanent"]
FAULT_KINDS: tuple[str, ...] = ("retryable", "permanent")
# web has no sandbox provider
SANDBOX_CHANNELS: tuple[Channel, ...] = (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.WEBHOOK)
MAX_LATENCY_MS = 10_000.0  # a slow provider, not a hung one: a node still stops within its shutdown grace
MAX_FAIL_FOR_S = 86_400.0
MAX_SEED = 2**32 - 1

FAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "error_rate": (0.0, 1.0),
    "latency_ms": (0.0, MAX_LATENCY_MS),
    "fail_for_s": (0.0, MAX_FAIL_FOR_S),
    "seed": (0, MAX_SEED),
}


class FaultSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One channel's fault setting; every field defaults to "no fault"."""

    error_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0, description="The share of calls that fail, 0 to 1.")] = 0.0
    kind: Annotated[
        FaultKind, msgspec.Meta(description="What a failed call answers: retryable (503-like) or permanent (400-like).")
    ] = "retryable"
    latency_ms: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_LATENCY_MS, description="Added to every call, failed or not.")] = 0.0
    fail_for_s: Annotated[
        float, msgspec.Meta(ge=0.0, le=MAX_FAIL_FOR_S, description="An outage: every call fails this long from when it is set.")
    ] = 0.0
    seed: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED, description="Seeds which calls fail under error_rate.")] = 0

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0 or self.fail_for_s > 0


NO_FAULT = FaultSpec()


class FaultView(msgspec.Struct, frozen=True):
    """A channel's fault setting as it runs: the setting, since when, and what it did since."""

    channel: Channel
    error_rate: float
    kind: FaultKind
    latency_ms: float
    fail_for_s: float
    seed: int
    active: bool  # any fault set
    since: str  # when the setting took effect (RFC 3339): the node's start, or the last PUT or DELETE
    outage_until: str | None  # the end of the outage window while it runs, else null
    calls: int  # calls to the sandbox client since then
    failed: int  # of which the setting failed


class FaultList(msgspec.Struct, frozen=True):
    """GET /v1/admin/sandbox/faults: one entry per channel served by a sandbox client."""

    faults: list[FaultView]
