"""The property tests have teeth: each deliberately broken bucket or breaker below is caught.

The machines take the class under test as a class attribute, so each case runs the very
same TokenBucketMachine / CircuitBreakerMachine against a broken subclass and expects
Hypothesis to find a failing run. Generation is derandomized (the same runs every time,
so a bug that slips through fails this file deterministically, not now and then) and
shrinking is skipped (only "it fails" matters here, not the smallest example).

The bugs reach into private attributes where they have to: they model mistakes in the
implementation, not misuse of its API.

The State-backed implementations' mutants (a State whose lease or breaker step is a read, a
round trip and a write, one that ignores the reserve, ...) are in tests/kit/mutants.py, caught
by the same machines driven through the State (tests/kit/test_catches_mutants.py).
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
from hypothesis import Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from actors.services.gate import ResilienceGate
from protocol.channels import Lane
from reactor.backends.embedded import MemoryState
from reactor.circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker, Transition
from reactor.gate_state import LeasedBucket, SharedBreaker
from reactor.ports import BreakerEvent, BreakerView, TokenLease
from reactor.token_bucket import TokenBucket

from tests.conformance.broken.state import AdmitsAProbePerOwner  # the State conformance suite's broken variant
from tests.reactor.test_circuit_breaker_properties import MACHINE_SETTINGS as BREAKER_SETTINGS
from tests.reactor.test_circuit_breaker_properties import CircuitBreakerMachine
from tests.reactor.test_gate_state_properties import MACHINE_SETTINGS as LEASES_SETTINGS
from tests.reactor.test_gate_state_properties import MACHINE_SETTINGS as SHARED_BREAKER_SETTINGS
from tests.reactor.test_gate_state_properties import LeasedBucketMachine, SharedBreakerMachine
from tests.reactor.test_shared_gate_properties import breaker_property, bucket_property
from tests.reactor.test_token_bucket_properties import MACHINE_SETTINGS as BUCKET_SETTINGS
from tests.reactor.test_token_bucket_properties import TokenBucketMachine, time_until_suffices

HUNT = dict(max_examples=100, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False, print_blob=False)
# Derandomized is not fixed forever: Hypothesis mixes the literals of the code loaded in the process into what it draws,
# so a whole suite's run draws other examples than this file alone. TakesBackAnyGiveBack, caught within 10 examples
# here alone, took 101-200 in a process that had imported every test module: the leased bucket's hunt has a margin.
LEASES_HUNT = dict(HUNT, max_examples=400)


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


# -- broken shared state of the gate (reactor/gate_state.py) -----------------------------


class ForgetsToSubtractLeasedTokens(LeasedBucket):
    """Grants a slice but leaves the free tokens as they were."""

    def lease(self, want: int, lease_s: float, now: float, give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        before = self.free
        answer = super().lease(want, lease_s, now, give_back, reserve)
        if answer.granted:
            self.free = min(before, self.capacity)
        return answer


class RefillsOverLeasedTokens(LeasedBucket):
    """Refills free tokens up to the capacity, as if nothing were out on lease."""

    def _refilled(self, free: float, elapsed: float, leased: int) -> float:
        return max(0.0, min(self.capacity, free + elapsed * self.refill_per_s))


class TakesBackAnyGiveBack(LeasedBucket):
    """Adds whatever a worker gives back, also for a lease that expired (its tokens were freed already)."""

    def lease(self, want: int, lease_s: float, now: float, give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        if give_back is not None and give_back[0] not in self.leases:
            self._advance(now)
            self.free += max(give_back[1], 0)
        return super().lease(want, lease_s, now, give_back, reserve)


class EndsLeasesEarly(LeasedBucket):
    """A lease ends at half its time: the worker still spends a slice the bucket counts as free again."""

    def lease(self, want: int, lease_s: float, now: float, give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        return super().lease(want, lease_s / 2, now, give_back, reserve)


class WaitsTooLittle(LeasedBucket):
    def time_until(self, n: int, now: float) -> float:
        return super().time_until(n, now) * 0.9


class TakesTheReserve(LeasedBucket):
    """A bulk lease (with a reserve) is served as a critical one: it takes the last tokens, and reserves."""

    def lease(self, want: int, lease_s: float, now: float, give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        return super().lease(want, lease_s, now, give_back)


class BulkReservesAhead(LeasedBucket):
    """A bulk lease that finds nothing above the reserve reserves a slice ahead (a debt the critical lane waits behind)."""

    def lease(self, want: int, lease_s: float, now: float, give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        answer = super().lease(want, lease_s, now, give_back, reserve)
        if reserve and want and not answer.granted and math.isfinite(answer.wait_s):
            return super().lease(want, lease_s, now)
        return answer


@pytest.mark.parametrize(
    "broken", [ForgetsToSubtractLeasedTokens, RefillsOverLeasedTokens, TakesBackAnyGiveBack, EndsLeasesEarly, WaitsTooLittle,
               TakesTheReserve, BulkReservesAhead],
)
def test_leased_bucket_machine_catches(broken: type[LeasedBucket]) -> None:
    with pytest.raises(AssertionError):
        machine = machine_for(LeasedBucketMachine, "bucket_class", broken)
        run_state_machine_as_test(machine, settings=settings(LEASES_SETTINGS, **LEASES_HUNT))


class AdmitsASecondProber(SharedBreaker):
    """Half-open, it admits one probe per worker instead of one for all."""

    def admit(self, config: BreakerConfig, owner: str, probe_lease_s: float, now: float) -> BreakerView:
        if self.snapshot.state is BreakerState.HALF_OPEN and self.probe_owner not in (None, owner):
            self.snapshot = dataclasses.replace(self.snapshot, probe_in_flight=False)
        return super().admit(config, owner, probe_lease_s, now)


class AnyoneSettlesTheProbe(SharedBreaker):
    """Counts an outcome in half-open as the probe's, whoever reports it."""

    def report(self, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool, now: float) -> BreakerView:
        if self.probe_owner is not None:
            owner, probe = self.probe_owner, True
        return super().report(config, owner, event, probe, now)


class ProbeLeaseNeverEnds(SharedBreaker):
    """A prober that dies holds the probe for ever."""

    def _restore(self, config: BreakerConfig, now: float) -> CircuitBreaker:
        return CircuitBreaker.restore(config, self.snapshot)


class ForgetsFailuresOfOtherWorkers(SharedBreaker):
    """Counts consecutive failures per worker, not across them."""

    def __init__(self) -> None:
        super().__init__()
        self.last_failing: str | None = None

    def report(self, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool, now: float) -> BreakerView:
        if event == "failure" and self.snapshot.state is BreakerState.CLOSED:
            if self.last_failing not in (None, owner):
                self.snapshot = dataclasses.replace(self.snapshot, failures=0)
            self.last_failing = owner
        return super().report(config, owner, event, probe, now)


@pytest.mark.parametrize(
    "broken", [AdmitsASecondProber, AnyoneSettlesTheProbe, ProbeLeaseNeverEnds, ForgetsFailuresOfOtherWorkers],
)
def test_shared_breaker_machine_catches(broken: type[SharedBreaker]) -> None:
    with pytest.raises(AssertionError):
        machine = machine_for(SharedBreakerMachine, "breaker_class", broken)
        run_state_machine_as_test(machine, settings=settings(SHARED_BREAKER_SETTINGS, **HUNT))


def test_the_real_shared_state_passes_the_hunting_settings_too() -> None:
    run_state_machine_as_test(LeasedBucketMachine, settings=settings(LEASES_SETTINGS, **LEASES_HUNT))
    run_state_machine_as_test(SharedBreakerMachine, settings=settings(SHARED_BREAKER_SETTINGS, **HUNT))


# -- broken gates, and States, shared by several workers (tests/reactor/test_shared_gate_properties.py) --


class CountsAUsedSliceAsUnused(ResilienceGate):
    """Takes a fresh slice without counting the old one: gives back the whole slice, spent tokens too."""

    async def _lease_slice(self, lane: Lane = Lane.BULK) -> float:
        if self._slice is not None:
            self._slice.tokens = self._granted
        wait = await super()._lease_slice(lane)
        self._granted = self._slice.tokens if self._slice is not None else 0
        return wait


class SpendsAnExpiredSlice(ResilienceGate):
    def _slice_usable(self, now: float, lane: Lane = Lane.BULK) -> bool:
        held = self._slices[lane]
        return held is not None and held.tokens > 0


class ProbeHeldByTheWorker(ResilienceGate):
    """The serial gate's probe flag under concurrent calls: the probe is the worker's, not one call's, so every call
    the worker admits while its probe is out goes through without a look at the breaker."""

    def _holds_probe(self, delivery: Any) -> bool:
        return self._probe is not None

    async def _admit(self, delivery: Any) -> None:
        if self._probe is not None:
            self.admitted += 1
            return
        await super()._admit(delivery)


class TrustsAnOldView(ResilienceGate):
    """Reads the shared breaker once, then admits on that view for as long as it says closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = dataclasses.replace(self.settings, refresh_s=3600.0)


class NowaitIgnoresTheBreaker(ResilienceGate):
    """`admit_nowait` that looks only at the slice: admits beside its probe, and while the breaker is open."""

    def admit_nowait(self, delivery: Any) -> bool:
        lane = delivery.priority.lane
        held = self._slices[lane]
        if held is None or not self._slice_usable(trio.current_time(), lane):
            return False
        held.tokens -= 1
        self.admitted += 1
        return True


class NowaitSpendsAnEmptySlice(ResilienceGate):
    """`admit_nowait` that spends a slice's token without checking one is left (or the slice still valid)."""

    def admit_nowait(self, delivery: Any) -> bool:
        held = self._slices[delivery.priority.lane]
        if held is None or self._probe is not None or self.breaker.state_at(trio.current_time()) is not BreakerState.CLOSED:
            return False
        held.tokens -= 1
        self.admitted += 1
        return True


class ForgetsToSubtractLeases(MemoryState):
    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        answer = await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back, reserve)
        bucket = self._leased_buckets[key]
        bucket.free = min(bucket.capacity, bucket.free + answer.granted)
        return answer


def state_of(cls: type[MemoryState]) -> Any:
    @asynccontextmanager
    async def open_state() -> AsyncIterator[MemoryState]:
        yield cls()

    return open_state


GATE_HUNT = dict(HUNT, max_examples=60)


@pytest.mark.parametrize(
    "gate, state",
    [(CountsAUsedSliceAsUnused, MemoryState), (SpendsAnExpiredSlice, MemoryState), (ResilienceGate, ForgetsToSubtractLeases)],
    ids=["gate-counts-a-used-slice-as-unused", "gate-spends-an-expired-slice", "state-forgets-to-subtract-leases"],
)
def test_shared_bucket_property_catches(gate: type[ResilienceGate], state: type[MemoryState]) -> None:
    with pytest.raises(AssertionError):
        bucket_property(state_of(state), gate, **GATE_HUNT)()


@pytest.mark.parametrize(
    "gate, state",
    [(CountsAUsedSliceAsUnused, MemoryState), (SpendsAnExpiredSlice, MemoryState), (ResilienceGate, ForgetsToSubtractLeases),
     (NowaitSpendsAnEmptySlice, MemoryState)],
    ids=["gate-counts-a-used-slice-as-unused", "gate-spends-an-expired-slice", "state-forgets-to-subtract-leases",
         "nowait-spends-an-empty-slice"],
)
def test_shared_bucket_property_catches_with_admit_nowait_first(gate: type[ResilienceGate], state: type[MemoryState]) -> None:
    with pytest.raises(AssertionError):
        bucket_property(state_of(state), gate, True, **GATE_HUNT)()


@pytest.mark.parametrize(
    "gate, state",
    [(TrustsAnOldView, MemoryState), (ResilienceGate, AdmitsAProbePerOwner), (ProbeHeldByTheWorker, MemoryState)],
    ids=["gate-trusts-an-old-view", "state-admits-two-probes", "gate-admits-calls-beside-its-probe"],
)
def test_shared_breaker_property_catches(gate: type[ResilienceGate], state: type[MemoryState]) -> None:
    with pytest.raises(AssertionError):
        breaker_property(state_of(state), gate, **GATE_HUNT)()


@pytest.mark.parametrize(
    "gate, state",
    [(TrustsAnOldView, MemoryState), (ResilienceGate, AdmitsAProbePerOwner), (ProbeHeldByTheWorker, MemoryState),
     (NowaitIgnoresTheBreaker, MemoryState)],
    ids=["gate-trusts-an-old-view", "state-admits-two-probes", "gate-admits-calls-beside-its-probe", "nowait-ignores-the-breaker"],
)
def test_shared_breaker_property_catches_with_admit_nowait_first(gate: type[ResilienceGate], state: type[MemoryState]) -> None:
    with pytest.raises(AssertionError):
        breaker_property(state_of(state), gate, True, **GATE_HUNT)()


def test_the_real_gates_pass_the_hunting_settings_too() -> None:
    for nowait in (False, True):
        bucket_property(state_of(MemoryState), ResilienceGate, nowait, **GATE_HUNT)()
        breaker_property(state_of(MemoryState), ResilienceGate, nowait, **GATE_HUNT)()
