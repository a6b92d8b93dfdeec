"""A circuit breaker as a pure state machine: it is told the time, it never reads a clock.

    CLOSED --F consecutive failures--> OPEN --open_timeout_s passed--> HALF_OPEN
    HALF_OPEN --a probe fails--> OPEN (a fresh timeout)
    HALF_OPEN --S consecutive probe successes--> CLOSED

The only legal edges are those four. The owner (the Provider actor) asks `allow(now)`
before each call and reports the call's outcome with `record_success(now)`,
`record_failure(now)` or `release_probe()`:

* CLOSED admits every call. A success resets the count of consecutive failures.
* OPEN admits nothing until `open_timeout_s` has passed; `time_until_allowed(now)` says
  how long to wait, so the owner sleeps once instead of polling.
* Once the timeout has passed the breaker is HALF_OPEN (`state_at(now)` reports it at
  once; the stored `state` follows at the next `allow`). HALF_OPEN admits exactly one
  probe at a time: while a probe is in flight `allow` says no and `time_until_allowed`
  says `math.inf`, meaning "wait for the probe's outcome", not for the clock.

What counts as what (the owner's side of the contract):

* `record_failure`: the provider is unhealthy: a transient failure (timeout, connection
  error, 5xx, throttling).
* `record_success`: the provider answered sensibly. That includes a *permanent* failure
  caused by the input (an invalid phone number, a rejected address, a 4xx about the
  request): the provider was healthy enough to judge the request, and opening the breaker
  because one tenant sends bad addresses would stall everyone else's deliveries.
* `release_probe()`: the call says nothing about the provider because there was no answer
  for reasons on our side (cancelled on shutdown, refused by local validation before
  sending). It frees the probe slot without counting anything, so the next call probes.

Outcomes are attributed to the current state: in HALF_OPEN to the probe in flight; with no
probe in flight (OPEN, or HALF_OPEN between probes) they are stale answers to calls admitted
before the breaker opened and change nothing (counted as `stale_outcomes`). The Provider
makes one call at a time, so an outcome always belongs to the call `allow` just admitted.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, NamedTuple


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


LEGAL_TRANSITIONS: frozenset[tuple[BreakerState, BreakerState]] = frozenset(
    {
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    }
)


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5  # consecutive failures that open a closed breaker
    open_timeout_s: float = 60.0  # how long it stays open before admitting a probe
    success_threshold: int = 3  # consecutive probe successes that close a half-open breaker

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("failure and success thresholds must be at least 1")
        if not 0 <= self.open_timeout_s < math.inf:
            raise ValueError("open_timeout_s must be finite and not negative")


class Transition(NamedTuple):
    at: float  # when it took effect; OPEN -> HALF_OPEN took effect when the timeout ran out
    from_state: BreakerState
    to_state: BreakerState


@dataclass(frozen=True)
class BreakerStatistics:
    state: BreakerState  # as last stored; `state_at(now)` also accounts for an elapsed timeout
    consecutive_failures: int  # in CLOSED
    consecutive_successes: int  # probe successes in HALF_OPEN
    probe_in_flight: bool
    open_until: float | None  # when OPEN: the earliest time a probe is admitted
    opened_count: int  # transitions into OPEN (from CLOSED or from HALF_OPEN)
    admitted: int  # allow() == True, probes included
    rejected: int  # allow() == False
    probes: int  # calls admitted in HALF_OPEN
    stale_outcomes: int  # outcomes reported with no call to attribute them to
    transitions_dropped: int  # transitions lost because nobody drained the queue


@dataclass(frozen=True)
class BreakerSnapshot:
    """Everything a breaker remembers, as plain fields: what a shared store keeps between events.

    `CircuitBreaker.restore(config, snapshot)` gives back a breaker that behaves exactly like
    the one `snapshot()` was taken of (pending transitions aside: drain them first). A State
    backend keeps one per provider and applies each event to the restored machine
    (reactor/gate_state.py); a Redis hash with these fields is the same thing.
    """

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    successes: int = 0
    probe_in_flight: bool = False
    open_until: float = 0.0
    opened: int = 0
    admitted: int = 0
    rejected: int = 0
    probes: int = 0
    stale: int = 0


class CircuitBreaker:
    def __init__(self, config: BreakerConfig | None = None, *, max_pending_transitions: int = 1000) -> None:
        self.config = config or BreakerConfig()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._probe_in_flight = False
        self._open_until = 0.0
        self._transitions: deque[Transition] = deque(maxlen=max_pending_transitions)
        self._opened = 0
        self._admitted = 0
        self._rejected = 0
        self._probes = 0
        self._stale = 0
        self._transitions_dropped = 0

    @classmethod
    def restore(cls, config: BreakerConfig, snapshot: BreakerSnapshot) -> CircuitBreaker:
        """A breaker in the state `snapshot` describes, under `config` (which may differ from the one it was taken under)."""
        breaker = cls(config)
        breaker._state = snapshot.state
        breaker._failures = snapshot.failures
        breaker._successes = snapshot.successes
        breaker._probe_in_flight = snapshot.probe_in_flight and snapshot.state is BreakerState.HALF_OPEN
        breaker._open_until = snapshot.open_until
        breaker._opened = snapshot.opened
        breaker._admitted = snapshot.admitted
        breaker._rejected = snapshot.rejected
        breaker._probes = snapshot.probes
        breaker._stale = snapshot.stale
        return breaker

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(
            self._state, self._failures, self._successes, self._probe_in_flight, self._open_until,
            self._opened, self._admitted, self._rejected, self._probes, self._stale,
        )

    # -- queries -----------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The stored state; an OPEN breaker whose timeout ran out reads HALF_OPEN only in `state_at`."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """The failures counted since the last success (statistics() without building them: asked per success)."""
        return self._failures

    def state_at(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def time_until_allowed(self, now: float) -> float:
        """0 if `allow(now)` would admit; the rest of the open timeout; inf while a probe is in flight.

        When finite, `allow(now + time_until_allowed(now))` admits (nothing else happening
        in between).
        """
        state = self.state_at(now)
        if state is BreakerState.CLOSED:
            return 0.0
        if state is BreakerState.HALF_OPEN:
            return math.inf if self._probe_in_flight else 0.0
        wait = self._open_until - now
        step = math.ulp(abs(now) + wait)
        while now + wait < self._open_until:  # rounding must not leave us an ulp short
            wait += step
            step *= 2
        return wait

    def statistics(self) -> BreakerStatistics:
        return BreakerStatistics(
            state=self._state,
            consecutive_failures=self._failures,
            consecutive_successes=self._successes,
            probe_in_flight=self._probe_in_flight,
            open_until=self._open_until if self._state is BreakerState.OPEN else None,
            opened_count=self._opened,
            admitted=self._admitted,
            rejected=self._rejected,
            probes=self._probes,
            stale_outcomes=self._stale,
            transitions_dropped=self._transitions_dropped,
        )

    def drain_transitions(self) -> list[Transition]:
        """The transitions since the last drain, oldest first, for logs and metrics."""
        drained = list(self._transitions)
        self._transitions.clear()
        return drained

    # -- events ------------------------------------------------------------------------

    def allow(self, now: float) -> bool:
        """May a call go out at `now`? In HALF_OPEN a True marks the probe in flight."""
        if self._state is BreakerState.OPEN:
            if now < self._open_until:
                self._rejected += 1
                return False
            self._move(self._open_until, BreakerState.HALF_OPEN)
        if self._state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                self._rejected += 1
                return False
            self._probe_in_flight = True
            self._probes += 1
        self._admitted += 1
        return True

    def record_success(self, now: float) -> None:
        """The provider answered (a permanent failure caused by the input counts here too)."""
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN and self._probe_in_flight:
            self._probe_in_flight = False
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._move(now, BreakerState.CLOSED)
        else:
            self._stale += 1

    def record_failure(self, now: float) -> None:
        """The provider is unhealthy: a transient failure."""
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open(now)
        elif self._state is BreakerState.HALF_OPEN and self._probe_in_flight:
            self._open(now)
        else:
            self._stale += 1

    def release_probe(self) -> None:
        """The probe ended with no word on the provider's health (e.g. cancelled): free the slot."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False

    # -- internals ---------------------------------------------------------------------

    def _open(self, now: float) -> None:
        self._move(now, BreakerState.OPEN)
        self._open_until = now + self.config.open_timeout_s
        self._opened += 1

    def _move(self, at: float, to: BreakerState) -> None:
        assert (self._state, to) in LEGAL_TRANSITIONS, (self._state, to)
        if len(self._transitions) == self._transitions.maxlen:
            self._transitions_dropped += 1
        self._transitions.append(Transition(at, self._state, to))
        self._state = to
        self._failures = 0
        self._successes = 0
        self._probe_in_flight = False


class ChannelDefaults(NamedTuple):
    bucket_capacity: float  # burst
    refill_per_s: float
    breaker: BreakerConfig


# The seed's per-provider limits (design decisions 4, 9 and 10). Configuration overrides them.
CHANNEL_DEFAULTS: Mapping[str, ChannelDefaults] = MappingProxyType(
    {
        # SendGrid: 1,000 emails a minute (the "16.67 per s" is this, rounded).
        "email": ChannelDefaults(1000.0, 1000.0 / 60.0, BreakerConfig()),
        # Twilio: 100 SMS a second.
        "sms": ChannelDefaults(100.0, 100.0, BreakerConfig()),
        # FCM: 3,000 pushes a second.
        "push": ChannelDefaults(3000.0, 3000.0, BreakerConfig()),
        # In-app web is internal (pub/sub to our own WebSocket sessions): the seed wants no
        # limiter and no breaker. A generous bucket, well above what one process fans out,
        # never throttles normal traffic but stops a runaway producer from monopolising the
        # shared event loop; the breaker only trips if the pub/sub itself fails 5 times in a
        # row (Redis down in the distributed setup), which is exactly when failing fast helps.
        "web": ChannelDefaults(10000.0, 10000.0, BreakerConfig()),
        # Webhooks go to the users' own endpoints, not to one provider's API: Herald's own outbound rate,
        # 1,000 POSTs a second. The breaker is the channel's, as for the others (docs/providers.md "Webhook").
        "webhook": ChannelDefaults(1000.0, 1000.0, BreakerConfig()),
    }
)
