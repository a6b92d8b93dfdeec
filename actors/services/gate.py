"""The Provider's gate: a token bucket and a circuit breaker in front of the channel client.

Both are pure state machines (reactor.token_bucket, reactor.circuit_breaker) fed with
Trio's clock. `admit` waits exactly as long as they say: for a token, or for an open
breaker's timeout. Deliveries are deferred, never dropped, and no call reaches the
provider while the breaker is open; when it half-opens, one probe goes through.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import trio

from protocol.messages import Delivery, Outcome, RetryLater
from reactor.circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker
from reactor.clock import iso, wall_ms
from reactor.token_bucket import TokenBucket

log = logging.getLogger("herald.gate")


@dataclass(frozen=True)
class Limits:
    capacity: float
    refill_per_s: float
    breaker: BreakerConfig


@dataclass(frozen=True)
class GateView:
    """What GET /v1/admin/circuits shows of a gate (protocol.api.CircuitView but the Provider's own counters)."""

    state: str
    consecutive_failures: int
    opened: int
    rejected: int
    tokens: float
    bucket_capacity: float
    refill_per_s: float
    deferred: int = 0
    throttled: int = 0
    transitions: dict[str, int] = field(default_factory=dict)
    retry_at: str | None = None


class ResilienceGate:
    def __init__(self, channel: str, limits: Limits) -> None:
        self.channel = channel
        self.limits = limits
        self.bucket = TokenBucket(limits.capacity, limits.refill_per_s, updated=trio.current_time())
        self.breaker = CircuitBreaker(limits.breaker)
        self.deferred = 0  # deliveries that waited for an open breaker
        self.throttled = 0  # deliveries that waited for a token
        self.transitions: dict[str, int] = {}

    async def admit(self, delivery: Delivery) -> None:
        deferred = throttled = False
        while True:
            now = trio.current_time()
            token_wait = self.bucket.time_until(1, now)
            if token_wait > 0:
                throttled = True
                await trio.sleep(token_wait)
                continue
            breaker_wait = self.breaker.time_until_allowed(now)
            if breaker_wait > 0:
                if not deferred:
                    deferred = True
                    self.deferred += 1
                    log.info("%s: breaker %s, deferring %s", self.channel, self.breaker.state_at(now).value, delivery.notification_id)
                # inf: a probe is out; the provider handles one call at a time, so this cannot last
                await trio.sleep(breaker_wait if math.isfinite(breaker_wait) else 0.1)
                continue
            if self.breaker.allow(now):
                taken = self.bucket.try_take(1, now)
                assert taken, "a token was there a moment ago"
                self.throttled += throttled
                self._note_transitions()
                return

    def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Retryable failures count against the provider; permanent ones are the input's fault."""
        now = trio.current_time()
        if isinstance(outcome, RetryLater):
            self.breaker.record_failure(now)
        else:
            self.breaker.record_success(now)
        self._note_transitions()

    def abandon(self, delivery: Delivery) -> None:
        """A crash (poison message) or cancellation: no word on health; free a half-open probe slot."""
        self.breaker.release_probe()

    async def view(self) -> GateView:
        """The breaker and bucket as they are now (the Provider answers a circuits query with it)."""
        now = trio.current_time()
        stats = self.breaker.statistics()
        retry_at = None
        if stats.open_until is not None and stats.open_until > now:
            retry_at = iso(wall_ms() + int((stats.open_until - now) * 1000))
        return GateView(
            state=self.breaker.state_at(now).value,
            consecutive_failures=stats.consecutive_failures,
            opened=stats.opened_count,
            rejected=stats.rejected,
            tokens=round(self.bucket.available(now), 3),
            bucket_capacity=self.limits.capacity,
            refill_per_s=self.limits.refill_per_s,
            deferred=self.deferred,
            throttled=self.throttled,
            transitions=dict(self.transitions),
            retry_at=retry_at,
        )

    def _note_transitions(self) -> None:
        for transition in self.breaker.drain_transitions():
            key = f"{transition.from_state.value}->{transition.to_state.value}"
            self.transitions[key] = self.transitions.get(key, 0) + 1
            level = logging.WARNING if transition.to_state is BreakerState.OPEN else logging.INFO
            log.log(level, "%s: circuit %s", self.channel, key)
