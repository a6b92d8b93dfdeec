"""The property tests have teeth: each deliberately broken bucket or breaker below is caught.

The machines take the class under test as a class attribute, so each case runs the very
same TokenBucketMachine / CircuitBreakerMachine against a broken subclass and expects
Hypothesis to find a failing run. Generation is derandomized (the same runs every time,
so a bug that slips through fails this file deterministically, not now and then) and
shrinking is skipped (only "it fails" matters here, not the smallest example).

The bugs reach into private attributes where they have to: they model mistakes in the
implementation, not misuse of its API.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from reactor.circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker, Transition
from reactor.token_bucket import TokenBucket

from tests.reactor.test_circuit_breaker_properties import MACHINE_SETTINGS as BREAKER_SETTINGS
from tests.reactor.test_circuit_breaker_properties import CircuitBreakerMachine
from tests.reactor.test_token_bucket_properties import MACHINE_SETTINGS as BUCKET_SETTINGS
from tests.reactor.test_token_bucket_properties import TokenBucketMachine, time_until_suffices

HUNT = dict(max_examples=100, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False, print_blob=False)


def machine_for(base: type[RuleBasedStateMachine], attribute: str, implementation: type) -> type[RuleBasedStateMachine]:
    return type(f"{base.__name__}With{implementation.__name__}", (base,), {attribute: implementation})


# -- broken buckets ----------------------------------------------------------------------


class RefillsPastCapacity(TokenBucket):
    def _level(self, at: float) -> float:
        if at > self.updated:
            return self.tokens + (at - self.updated) * self.refill_per_s  # no cap
        return self.tokens


class TimeUntilTooShort(TokenBucket):
    def time_until(self, n: float, now: float) -> float:
        return super().time_until(n, now) * 0.99


class MintsTokensWhenTheClockGoesBack(TokenBucket):
    def _level(self, at: float) -> float:
        return min(self.capacity, self.tokens + abs(at - self.updated) * self.refill_per_s)

    def _refill(self, now: float) -> None:
        self.tokens = self._level(now)
        self.updated = now


class AdmitsOnCredit(TokenBucket):
    def try_take(self, n: float, now: float) -> bool:
        self._refill(now)
        if n <= self.tokens + 0.5:
            self.tokens = max(0.0, self.tokens - n)
            self.admitted += 1
            return True
        self.rejected += 1
        return False


class NaiveTimeUntil(TokenBucket):
    """The bucket's time_until before this change: exact in real arithmetic, an ulp short in floats,
    and blind to a clock that went backwards."""

    def time_until(self, n: float, now: float) -> float:
        self._refill(now)
        if n > self.capacity:
            return math.inf
        return max(0.0, (n - self.tokens) / self.refill_per_s)


@pytest.mark.parametrize(
    "broken", [RefillsPastCapacity, TimeUntilTooShort, MintsTokensWhenTheClockGoesBack, AdmitsOnCredit, NaiveTimeUntil]
)
def test_bucket_machine_catches(broken: type[TokenBucket]) -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(machine_for(TokenBucketMachine, "bucket_class", broken), settings=settings(BUCKET_SETTINGS, **HUNT))


def test_time_until_rounding_is_caught() -> None:
    with pytest.raises(AssertionError):
        time_until_suffices(NaiveTimeUntil, **HUNT)()


def test_the_real_bucket_passes_the_hunting_settings_too() -> None:
    run_state_machine_as_test(TokenBucketMachine, settings=settings(BUCKET_SETTINGS, **HUNT))
    time_until_suffices(TokenBucket, **HUNT)()


# -- broken breakers ---------------------------------------------------------------------


class AdmitsTwoProbes(CircuitBreaker):
    def __init__(self, config: BreakerConfig | None = None) -> None:
        super().__init__(config)
        self.extra_probe_given = False

    def allow(self, now: float) -> bool:
        stats = self.statistics()
        if self.state_at(now) is BreakerState.HALF_OPEN and stats.probe_in_flight and not self.extra_probe_given:
            self.extra_probe_given = True
            return True
        if self.state_at(now) is not BreakerState.HALF_OPEN:
            self.extra_probe_given = False
        return super().allow(now)


class OpensOneFailureLate(CircuitBreaker):
    def __init__(self, config: BreakerConfig | None = None) -> None:
        config = config or BreakerConfig()
        super().__init__(BreakerConfig(config.failure_threshold + 1, config.open_timeout_s, config.success_threshold))


class ClosesOneSuccessEarly(CircuitBreaker):
    def __init__(self, config: BreakerConfig | None = None) -> None:
        config = config or BreakerConfig()
        super().__init__(BreakerConfig(config.failure_threshold, config.open_timeout_s, max(1, config.success_threshold - 1)))


class HalvesTheOpenTimeout(CircuitBreaker):
    def __init__(self, config: BreakerConfig | None = None) -> None:
        config = config or BreakerConfig()
        super().__init__(BreakerConfig(config.failure_threshold, config.open_timeout_s / 2, config.success_threshold))


class FailedProbeKeepsTheOldTimeout(CircuitBreaker):
    def record_failure(self, now: float) -> None:
        reopening = self._state is BreakerState.HALF_OPEN and self._probe_in_flight
        old_deadline = self._open_until
        super().record_failure(now)
        if reopening:
            self._open_until = old_deadline


class StaleSuccessClosesAnOpenBreaker(CircuitBreaker):
    def record_success(self, now: float) -> None:
        if self._state is BreakerState.OPEN:  # an illegal edge, OPEN -> CLOSED
            self._transitions.append(Transition(now, BreakerState.OPEN, BreakerState.CLOSED))
            self._state = BreakerState.CLOSED
            self._failures = 0
            return
        super().record_success(now)


class ProbeNeverReleased(CircuitBreaker):
    def release_probe(self) -> None:
        return None


@pytest.mark.parametrize(
    "broken",
    [
        AdmitsTwoProbes,
        OpensOneFailureLate,
        ClosesOneSuccessEarly,
        HalvesTheOpenTimeout,
        FailedProbeKeepsTheOldTimeout,
        StaleSuccessClosesAnOpenBreaker,
        ProbeNeverReleased,
    ],
)
def test_breaker_machine_catches(broken: type[CircuitBreaker]) -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(machine_for(CircuitBreakerMachine, "breaker_class", broken), settings=settings(BREAKER_SETTINGS, **HUNT))


def test_the_real_breaker_passes_the_hunting_settings_too() -> None:
    run_state_machine_as_test(CircuitBreakerMachine, settings=settings(BREAKER_SETTINGS, **HUNT))
