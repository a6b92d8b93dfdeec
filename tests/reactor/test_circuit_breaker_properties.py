"""CircuitBreaker against an explicit transition-table model, plus the seed's configuration.

The model is a table of rows (state, event, guard) -> (next state, verdict, effect),
written independently of the implementation. The implementation class is the class
attribute `breaker_class`, so test_properties_catch_bugs.py can run this same machine
against deliberately broken breakers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reactor.circuit_breaker import CHANNEL_DEFAULTS, BreakerConfig, BreakerState, CircuitBreaker

MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Written out here rather than imported: the test's own idea of the legal edges.
LEGAL_EDGES = {("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("half_open", "closed")}


# -- the reference model: an explicit transition table --------------------------------


@dataclass
class Model:
    failures_to_open: int
    timeout: float
    successes_to_close: int
    state: str = "closed"
    failures: int = 0
    successes: int = 0
    probe: bool = False
    open_until: float = 0.0
    opens: int = 0
    log: list[tuple[float, str, str]] = field(default_factory=list)

    def observed(self, now: float) -> str:
        return "half_open" if self.state == "open" and now >= self.open_until else self.state

    def fire(self, event: str, now: float) -> bool | None:
        if self.observed(now) != self.state:  # the open timeout ran out
            self.go("half_open", self.open_until)
        for state, on, guard, target, verdict, effect in TABLE:
            if state == self.state and on == event and guard(self):
                effect(self, now)
                if target != self.state:
                    self.go(target, now)
                    if target == "open":
                        self.open_until = now + self.timeout
                        self.opens += 1
                return verdict
        raise AssertionError(f"the table has no row for {event} in {self.state}")

    def go(self, target: str, at: float) -> None:
        self.log.append((at, self.state, target))
        self.state = target
        self.failures = self.successes = 0
        self.probe = False


def always(m: Model) -> bool:
    return True


def nothing(m: Model, now: float) -> None:
    return None


def count_failure(m: Model, now: float) -> None:
    m.failures += 1


def reset_failures(m: Model, now: float) -> None:
    m.failures = 0


def start_probe(m: Model, now: float) -> None:
    m.probe = True


def end_probe(m: Model, now: float) -> None:
    m.probe = False


def probe_succeeded(m: Model, now: float) -> None:
    m.probe = False
    m.successes += 1


Row = tuple[str, str, Callable[[Model], bool], str, "bool | None", Callable[[Model, float], None]]
TABLE: list[Row] = [
    # state        event       guard                                                  next         allow? effect
    ("closed", "allow", always, "closed", True, nothing),
    ("closed", "success", always, "closed", None, reset_failures),
    ("closed", "failure", lambda m: m.failures + 1 < m.failures_to_open, "closed", None, count_failure),
    ("closed", "failure", lambda m: m.failures + 1 >= m.failures_to_open, "open", None, nothing),
    ("closed", "release", always, "closed", None, nothing),
    ("open", "allow", always, "open", False, nothing),  # only before the timeout: see `fire`
    ("open", "success", always, "open", None, nothing),  # stale outcomes
    ("open", "failure", always, "open", None, nothing),
    ("open", "release", always, "open", None, nothing),
    ("half_open", "allow", lambda m: not m.probe, "half_open", True, start_probe),
    ("half_open", "allow", lambda m: m.probe, "half_open", False, nothing),
    ("half_open", "success", lambda m: m.probe and m.successes + 1 < m.successes_to_close, "half_open", None, probe_succeeded),
    ("half_open", "success", lambda m: m.probe and m.successes + 1 >= m.successes_to_close, "closed", None, nothing),
    ("half_open", "success", lambda m: not m.probe, "half_open", None, nothing),
    ("half_open", "failure", lambda m: m.probe, "open", None, nothing),
    ("half_open", "failure", lambda m: not m.probe, "half_open", None, nothing),
    ("half_open", "release", always, "half_open", None, end_probe),
]


# -- the machine -----------------------------------------------------------------------


class CircuitBreakerMachine(RuleBasedStateMachine):
    breaker_class: ClassVar[type[CircuitBreaker]] = CircuitBreaker

    @initialize(
        failures=st.integers(1, 6),
        timeout=st.sampled_from([0.0, 0.5, 60.0]) | st.floats(0.0, 120.0),
        successes=st.integers(1, 4),
        start=st.just(0.0) | st.floats(0.0, 1e6),
    )
    def setup(self, failures: int, timeout: float, successes: int, start: float) -> None:
        self.breaker = self.breaker_class(BreakerConfig(failures, timeout, successes))
        self.model = Model(failures, timeout, successes)
        self.now = start
        self.impl_log: list[tuple[float, str, str]] = []
        self.rejected = 0
        self.outstanding_probes = 0  # admitted in HALF_OPEN, outcome not yet reported
        self.failure_run = 0  # consecutive failures reported while closed

    # -- helpers -----------------------------------------------------------------------

    def allow(self) -> bool:
        expected_state = self.model.observed(self.now)
        admitted = self.breaker.allow(self.now)
        expected = self.model.fire("allow", self.now)
        if expected_state == "open":
            assert not admitted, f"admitted at {self.now} while open until {self.model.open_until}"
        assert admitted == expected, f"allow() = {admitted} in {expected_state}, expected {expected}"
        if admitted and expected_state == "half_open":
            self.outstanding_probes += 1
        if not admitted:
            self.rejected += 1
        return admitted

    def outcome(self, event: str) -> None:
        before = self.model.state
        if before == "half_open" and self.model.probe:
            self.outstanding_probes -= 1
        if event == "success":
            self.breaker.record_success(self.now)
        elif event == "failure":
            self.breaker.record_failure(self.now)
        else:
            self.breaker.release_probe()
        self.model.fire(event, self.now)
        if before == "closed":
            self.failure_run = self.failure_run + 1 if event == "failure" else (0 if event == "success" else self.failure_run)
            if self.model.state == "open":
                assert self.failure_run == self.model.failures_to_open, (self.failure_run, self.model.failures_to_open)
                self.failure_run = 0

    # -- rules -------------------------------------------------------------------------

    @rule(dt=st.just(0.0) | st.floats(0.0, 1.0) | st.floats(0.0, 150.0) | st.floats(0.0, 1e6))
    def advance(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.model.state == "open")
    @rule(nudge=st.sampled_from([-1, 0, 1]))
    def advance_to_the_open_deadline(self, nudge: int) -> None:
        """Land exactly on the deadline, or one ulp either side of it."""
        target = self.model.open_until
        if nudge:
            target = math.nextafter(target, nudge * math.inf)
        self.now = max(self.now, target)

    @rule()
    def ask(self) -> None:
        self.allow()

    @rule(event=st.sampled_from(["success", "failure", "release"]))
    def report(self, event: str) -> None:
        """An outcome with or without a call in flight (a stale one is allowed and ignored)."""
        self.outcome(event)

    @rule(event=st.sampled_from(["success", "failure", "failure", "release"]))
    def call(self, event: str) -> None:
        """What the Provider does: ask, and if admitted, report how the call went."""
        if self.allow():
            self.outcome(event)

    @rule(k=st.integers(1, 7))
    def failure_burst(self, k: int) -> None:
        for _ in range(k):
            self.outcome("failure")

    @rule()
    def wait_until_allowed(self) -> None:
        wait = self.breaker.time_until_allowed(self.now)
        observed = self.model.observed(self.now)
        if wait == math.inf:
            assert observed == "half_open" and self.model.probe, f"told to wait forever in {observed}"
            return
        if observed == "half_open" and self.model.probe:
            raise AssertionError(f"a probe is in flight, yet told to wait {wait}")
        assert wait >= 0
        if observed == "open":
            assert wait == pytest.approx(self.model.open_until - self.now, rel=1e-9, abs=1e-9)
        else:
            assert wait == 0
        if wait > 0:
            assert not copy.deepcopy(self.breaker).allow(self.now)
        self.now += wait
        assert self.allow(), f"refused after waiting time_until_allowed = {wait}"

    # -- invariants --------------------------------------------------------------------

    @precondition(lambda self: hasattr(self, "breaker"))
    @invariant()
    def state_matches_the_model(self) -> None:
        actual, expected = self.breaker.state_at(self.now).value, self.model.observed(self.now)
        assert actual == expected, f"breaker is {actual} at {self.now}, the model says {expected}"

    @precondition(lambda self: hasattr(self, "breaker"))
    @invariant()
    def at_most_one_probe(self) -> None:
        assert 0 <= self.outstanding_probes <= 1
        assert self.breaker.statistics().probe_in_flight == self.model.probe, "probe slot out of step with the model"

    @precondition(lambda self: hasattr(self, "breaker"))
    @invariant()
    def transitions_are_legal_and_as_modelled(self) -> None:
        for at, old, new in self.breaker.drain_transitions():
            assert (old.value, new.value) in LEGAL_EDGES, (old, new)
            self.impl_log.append((at, old.value, new.value))
        expected = self.model.log
        if len(expected) == len(self.impl_log) + 1 and expected[-1][1:] == ("open", "half_open"):
            expected = expected[:-1]  # the model noticed the timeout first; the breaker notes it at the next allow()
        assert self.impl_log == expected, f"transitions {self.impl_log}, the model {expected}"

    @precondition(lambda self: hasattr(self, "breaker"))
    @invariant()
    def counters_match(self) -> None:
        stats = self.breaker.statistics()
        assert stats.opened_count == self.model.opens, f"opened {stats.opened_count} times, the model {self.model.opens}"
        assert stats.rejected == self.rejected, (stats.rejected, self.rejected)


CircuitBreakerMachine.TestCase.settings = MACHINE_SETTINGS
TestCircuitBreakerMachine = CircuitBreakerMachine.TestCase


# -- examples: the seed's configuration --------------------------------------------------


def test_seed_defaults() -> None:
    assert BreakerConfig() == BreakerConfig(failure_threshold=5, open_timeout_s=60.0, success_threshold=3)
    for channel in ("email", "sms", "push", "web"):
        assert CHANNEL_DEFAULTS[channel].breaker == BreakerConfig()
    assert CHANNEL_DEFAULTS["email"][:2] == (1000.0, pytest.approx(16.67, abs=0.01))
    assert CHANNEL_DEFAULTS["sms"][:2] == (100.0, 100.0)
    assert CHANNEL_DEFAULTS["push"][:2] == (3000.0, 3000.0)


def test_five_failures_open_for_sixty_seconds_three_probes_close() -> None:
    breaker = CircuitBreaker()
    for i in range(4):
        assert breaker.allow(i)
        breaker.record_failure(i)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow(4)
    breaker.record_failure(4)  # the fifth in a row
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(5)
    assert breaker.time_until_allowed(5) == 59
    assert not breaker.allow(63.999)
    assert breaker.state_at(64) is BreakerState.HALF_OPEN
    for t in (64, 65, 66):
        assert breaker.allow(t)  # one probe ...
        assert not breaker.allow(t)  # ... at a time
        assert breaker.time_until_allowed(t) == math.inf
        breaker.record_success(t)
    assert breaker.state is BreakerState.CLOSED
    assert [(at, old.value, new.value) for at, old, new in breaker.drain_transitions()] == [
        (4, "closed", "open"),
        (64, "open", "half_open"),
        (66, "half_open", "closed"),
    ]
    assert breaker.drain_transitions() == []
    stats = breaker.statistics()
    assert (stats.opened_count, stats.rejected, stats.probes) == (1, 5, 3)


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker()
    for t in range(20):
        breaker.record_failure(t)
        if t % 4 == 3:
            breaker.record_success(t)
    assert breaker.state is BreakerState.CLOSED


def test_a_failed_probe_reopens_with_a_fresh_timeout() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_timeout_s=60, success_threshold=3))
    breaker.record_failure(0)
    assert breaker.allow(60)
    breaker.record_success(60)
    assert breaker.allow(61)
    breaker.record_failure(61)  # the probe streak is broken
    assert breaker.state is BreakerState.OPEN
    assert breaker.time_until_allowed(61) == 60
    assert not breaker.allow(120)
    assert breaker.allow(121)
    assert breaker.statistics().consecutive_successes == 0


def test_a_released_probe_frees_the_slot_without_counting() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_timeout_s=1, success_threshold=1))
    breaker.record_failure(0)
    assert breaker.allow(1)
    breaker.release_probe()  # e.g. cancelled on shutdown: no word on the provider's health
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow(1)
    breaker.record_success(1)
    assert breaker.state is BreakerState.CLOSED


def test_stale_outcomes_change_nothing() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_timeout_s=10, success_threshold=1))
    breaker.record_failure(0)
    breaker.record_success(1)  # an answer to a call admitted before the breaker opened
    breaker.record_failure(2)
    assert breaker.state is BreakerState.OPEN and breaker.time_until_allowed(2) == 8
    assert breaker.statistics().stale_outcomes == 2


@pytest.mark.parametrize(
    "kwargs", [dict(failure_threshold=0), dict(success_threshold=0), dict(open_timeout_s=-1), dict(open_timeout_s=math.inf)]
)
def test_bad_configuration_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]
