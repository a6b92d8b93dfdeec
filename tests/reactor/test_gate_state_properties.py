"""The gate's shared state (reactor/gate_state.py) as state machines, with several workers.

LeasedBucketMachine: workers lease slices of one LeasedBucket, spend them while their lease
is valid, give back what is left or crash holding it, in random order and at random times.
Checked on the history of spent tokens: in every window [t_i, t_j], across all workers,
at most capacity + rate * (t_j - t_i); plus free + leased <= capacity, every token a worker
may still spend counted as leased, every request for tokens answered with a slice (at once,
or reserved for when the refill has paid for it: spent from then on, which the window
bound checks), and a reservation's wait never longer than the leases out plus the refill.

SharedBreakerMachine: workers ask a SharedBreaker, call, report, release, or die holding
the probe. Checked against the pure CircuitBreaker's rules (the table model of
test_circuit_breaker_properties.py drives the same events): open after exactly F
consecutive failures from any workers, nothing admitted while open, at most one probe out
across all workers, only the probe's holder settles it, and a dead prober's slot frees
once its lease ends.

The implementations are class attributes (`bucket_class`, `breaker_class`), so
test_properties_catch_bugs.py runs these machines against broken ones.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule  # noqa: F401

from reactor.circuit_breaker import BreakerConfig
from reactor.gate_state import LeasedBucket, SharedBreaker
from tests.reactor.test_circuit_breaker_properties import Model

MACHINE_SETTINGS = settings(max_examples=150, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORKERS = 3
worker_ids = st.integers(0, WORKERS - 1)


def eps_for(capacity: float) -> Fraction:
    return Fraction(1e-9) * max(1, Fraction(capacity))


# -- the leased bucket ------------------------------------------------------------------


class LeasedBucketMachine(RuleBasedStateMachine):
    bucket_class: ClassVar[type[LeasedBucket]] = LeasedBucket

    @initialize(
        capacity=st.sampled_from([1.0, 5.0, 10.0, 100.0, 2.5]) | st.floats(1.0, 500.0),
        rate=st.sampled_from([1.0, 10.0, 100.0, 0.5]) | st.floats(0.05, 1000.0),
        start=st.just(0.0) | st.floats(0.0, 1e5),
    )
    def setup(self, capacity: float, rate: float, start: float) -> None:
        self.bucket = self.bucket_class(capacity, rate, updated=start)
        self.capacity, self.rate = Fraction(capacity), Fraction(rate)
        self.eps = eps_for(capacity)
        self.now = start
        self.slices: dict[int, tuple[str, int, float, float]] = {}  # worker -> (lease id, tokens left, valid from, until)
        self.spent: list[Fraction] = []  # the time of every spent token

    def usable(self, worker: int) -> int:
        held = self.slices.get(worker)
        return held[1] if held is not None and held[2] <= self.now < held[3] else 0

    # -- rules -------------------------------------------------------------------------

    @rule(dt=st.just(0.0) | st.floats(0.0, 0.05) | st.floats(0.0, 2.0) | st.floats(0.0, 1e3))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(worker=worker_ids, want=st.integers(0, 12) | st.sampled_from([1, 5, 50, 1000]), lease_s=st.floats(0.01, 5.0),
          give_back=st.booleans())
    def lease(self, worker: int, want: int, lease_s: float, give_back: bool) -> None:
        held = self.slices.pop(worker, None) if give_back else None
        if not give_back:
            self.slices.pop(worker, None)  # dropped without a word: it expires by itself
        leases_end = max((lease.expires for lease in self.bucket.leases.values()), default=self.now)
        live = held is not None and held[0] in self.bucket.leases and self.bucket.leases[held[0]].expires > self.now
        free_before = self.bucket.free_at(self.now) + (min(held[1], self.bucket.leases[held[0]].tokens) if held and live else 0)
        answer = self.bucket.lease(want, lease_s, self.now, (held[0], held[1]) if held else None)
        assert 0 <= answer.granted <= want and answer.granted == int(answer.granted)
        if want == 0 or math.floor(self.capacity) == 0:
            assert answer.granted == 0 and answer.lease_id == ""
            return
        assert answer.granted > 0 and answer.lease_id, "a request for tokens always gets a slice, at once or reserved"
        if answer.wait_s > 0:  # a reservation: only when nothing was free, for the whole slice
            assert free_before < 1 + self.eps, f"reserved with {free_before} free"
            assert answer.granted == min(want, math.floor(self.capacity))
            # Long enough: by the time it starts, the refill has paid the debt (nothing else happening).
            assert self.bucket.free_at(self.now + answer.wait_s) >= -self.eps, "a reservation that starts before it is paid for"
            # Not longer than the leases out (a crashed worker's among them) plus the refill of the debt and the slice.
            debt = max(Fraction(0), -Fraction(free_before))
            bound = max(Fraction(leases_end) - Fraction(self.now), Fraction(0)) + (debt + answer.granted) / self.rate
            slack = Fraction(1e-6) * (1 + abs(Fraction(self.now)))
            assert Fraction(answer.wait_s) <= bound + slack, (answer.wait_s, float(bound))
        # The worker spends it from wait_s on, for lease_s (its clock and the bucket's are one here).
        self.slices[worker] = (answer.lease_id, answer.granted, self.now + answer.wait_s, self.now + answer.wait_s + lease_s)

    @rule(worker=worker_ids, want=st.integers(0, 12) | st.sampled_from([1, 5, 50]), lease_s=st.floats(0.01, 5.0),
          reserve=st.integers(1, 12) | st.sampled_from([1, 2, 50]), give_back=st.booleans())
    def bulk_lease(self, worker: int, want: int, lease_s: float, reserve: int, give_back: bool) -> None:
        """A bulk lane's lease, with a reserve. The model: it is granted what lies above the reserve, whole tokens,
        up to `want`, at once, and nothing else (no reservation, no debt); refused, it is told a wait after which a
        token does lie above the reserve (nothing else happening)."""
        held = self.slices.pop(worker, None)
        given = (held[0], held[1]) if held is not None and give_back else None
        live = given is not None and given[0] in self.bucket.leases and self.bucket.leases[given[0]].expires > self.now
        free_before = self.bucket.free_at(self.now) + (min(given[1], self.bucket.leases[given[0]].tokens) if given and live else 0)
        answer = self.bucket.lease(want, lease_s, self.now, given, reserve)
        # free_before is summed here in floats: at an integer boundary, either side of it
        allowed = {max(0, min(want, math.floor(free_before + d) - reserve)) for d in (-self.eps, self.eps)}
        assert answer.granted in allowed, f"granted {answer.granted} of {want} with {free_before} free, a reserve of {reserve}"
        free_after = self.bucket.free_at(self.now)
        if answer.granted:
            assert answer.wait_s == 0 and answer.lease_id, "a bulk lease is granted at once or not at all"
            assert free_after >= reserve - self.eps, f"bulk left {free_after} free, below the reserve of {reserve}"
            self.slices[worker] = (answer.lease_id, answer.granted, self.now, self.now + lease_s)
            return
        assert answer.lease_id == "", "a refused bulk lease holds nothing"
        assert free_after == pytest.approx(float(free_before), abs=float(self.eps)), "a refused bulk lease changed the bucket"
        if want and math.isfinite(answer.wait_s):
            assert self.bucket.free_at(self.now + answer.wait_s) >= reserve + 1 - self.eps, "bulk told to come back too soon"

    @rule(worker=worker_ids, k=st.integers(1, 20))
    def wait_for_the_slice_then_spend(self, worker: int, k: int) -> None:
        """What the gate does with a reservation: sleep until it starts, spend at once."""
        held = self.slices.get(worker)
        if held is not None:
            self.now = max(self.now, held[2])
            self.spend(worker, k)

    @rule(worker=worker_ids, k=st.integers(1, 20))
    def spend(self, worker: int, k: int) -> None:
        """What the gate does with its slice: spend tokens while the lease is valid."""
        n = min(k, self.usable(worker))
        if n:
            lease_id, left, start, until = self.slices[worker]
            self.slices[worker] = (lease_id, left - n, start, until)
            self.spent.extend([Fraction(self.now)] * n)

    @rule(worker=worker_ids)
    def crash(self, worker: int) -> None:
        """The worker dies holding its slice: nothing goes back."""
        self.slices.pop(worker, None)

    @rule(worker=worker_ids)
    def stop(self, worker: int) -> None:
        """The worker stops and gives back its slice (want 0)."""
        held = self.slices.pop(worker, None)
        if held is not None:
            answer = self.bucket.lease(0, 1.0, self.now, (held[0], held[1]))
            assert answer.granted == 0 and answer.lease_id == ""

    # -- invariants --------------------------------------------------------------------

    @precondition(lambda self: hasattr(self, "bucket"))
    @invariant()
    def free_plus_leased_within_capacity(self) -> None:
        free = self.bucket.free_at(self.now)
        at = max(self.now, self.bucket.updated)
        leased_now = sum(lease.tokens for lease in self.bucket.leases.values() if lease.expires > at)
        assert Fraction(free) + leased_now <= self.capacity + self.eps, (free, leased_now, float(self.capacity))

    @precondition(lambda self: hasattr(self, "bucket"))
    @invariant()
    def every_spendable_token_is_counted_as_leased(self) -> None:
        live = {lid: lease for lid, lease in self.bucket.leases.items() if lease.expires > max(self.now, self.bucket.updated)}
        for worker in self.slices:
            if self.usable(worker):
                lease_id, left, _, _ = self.slices[worker]
                assert lease_id in live and live[lease_id].tokens >= left, (worker, lease_id, left)

    @precondition(lambda self: hasattr(self, "bucket"))
    @invariant()
    def every_window_respects_the_rate(self) -> None:
        if not self.spent:
            return
        t_j, total = self.spent[-1], 0
        for t_i in reversed(self.spent):
            total += 1
            assert total <= self.capacity + self.rate * (t_j - t_i) + self.eps * len(self.spent), (
                f"{total} tokens spent in [{float(t_i)}, {float(t_j)}]"
            )


LeasedBucketMachine.TestCase.settings = MACHINE_SETTINGS
TestLeasedBucketMachine = LeasedBucketMachine.TestCase


# -- the shared breaker -----------------------------------------------------------------


class SharedBreakerMachine(RuleBasedStateMachine):
    breaker_class: ClassVar[type[SharedBreaker]] = SharedBreaker

    @initialize(
        failures=st.integers(1, 4), timeout=st.sampled_from([0.0, 1.0, 60.0]) | st.floats(0.0, 20.0),
        successes=st.integers(1, 3), probe_lease=st.sampled_from([0.5, 2.0, 30.0]) | st.floats(0.01, 10.0),
        start=st.just(0.0) | st.floats(0.0, 1e5),
    )
    def setup(self, failures: int, timeout: float, successes: int, probe_lease: float, start: float) -> None:
        self.config = BreakerConfig(failures, timeout, successes)
        self.shared = self.breaker_class()
        self.model = Model(failures, timeout, successes)  # the pure machine's rules, as a table
        self.probe_lease = probe_lease
        self.now = start
        self.calls: dict[int, bool] = {}  # worker -> the call it has out: probe or not
        self.probe_holder: int | None = None  # the model's: who holds the probe, and until when
        self.probe_until = 0.0

    def expire_probe(self) -> None:
        if self.probe_holder is not None and self.probe_until <= self.now:
            self.model.fire("release", self.now)
            self.probe_holder = None

    # -- rules -------------------------------------------------------------------------

    @rule(dt=st.just(0.0) | st.floats(0.0, 1.0) | st.floats(0.0, 150.0))
    def advance(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.probe_holder is not None)
    @rule(nudge=st.sampled_from([-1, 0, 1]))
    def to_the_probe_leases_end(self, nudge: int) -> None:
        """Land on the end of the probe's lease, or one ulp either side of it."""
        target = self.probe_until if not nudge else math.nextafter(self.probe_until, nudge * math.inf)
        self.now = max(self.now, target)

    @precondition(lambda self: self.model.state == "open")
    @rule()
    def to_the_deadline(self) -> None:
        self.now = max(self.now, self.model.open_until)

    @rule(worker=worker_ids)
    def admit(self, worker: int) -> None:
        if worker in self.calls:
            return  # a worker makes one call at a time
        self.expire_probe()
        observed = self.model.observed(self.now)
        view = self.shared.admit(self.config, f"w{worker}", self.probe_lease, self.now)
        expected = self.model.fire("allow", self.now)
        if observed == "open":
            assert not view.allowed, f"admitted at {self.now} while open until {self.model.open_until}"
        assert view.allowed == expected, (view, observed, self.probe_holder)
        if view.allowed:
            probe = observed == "half_open"
            assert view.probe == probe
            self.calls[worker] = probe
            if probe:
                self.probe_holder, self.probe_until = worker, self.now + self.probe_lease
                assert view.probe_owner == f"w{worker}"

    @precondition(lambda self: self.model.state != "closed")
    @rule(first=worker_ids, second=worker_ids)
    def race_for_the_probe(self, first: int, second: int) -> None:
        """Two workers ask, one right after the other, once the breaker is not closed."""
        self.now = max(self.now, self.model.open_until)
        self.admit(first)
        self.admit(second)

    @rule(worker=worker_ids, k=st.integers(1, 5))
    def failure_burst(self, worker: int, k: int) -> None:
        """Failures reported by one worker in a row (calls admitted before: a closed breaker counts them)."""
        for _ in range(k):
            self.report(worker, "failure")

    @rule(first=worker_ids, second=worker_ids, k=st.integers(1, 5))
    def failures_from_two_workers(self, first: int, second: int, k: int) -> None:
        """Failures of two workers' calls, ending in turn (workers of one provider fail together in an outage)."""
        for i in range(k):
            self.report(first if i % 2 == 0 else second, "failure")

    @rule(worker=worker_ids, event=st.sampled_from(["success", "failure", "failure", "release"]))
    def report(self, worker: int, event: str) -> None:
        """The worker's call ends (or, with no call out, a stale report arrives)."""
        probe = self.calls.pop(worker, False)
        self.expire_probe()
        self.shared.report(self.config, f"w{worker}", event, probe, self.now)  # type: ignore[arg-type]
        holder = probe and self.probe_holder == worker
        if self.model.state == "half_open" and not holder:
            return  # not the probe's outcome: it counts for nothing
        self.model.fire(event, self.now)
        if holder:
            self.probe_holder = None

    @rule(worker=worker_ids)
    def die(self, worker: int) -> None:
        """The worker dies with its call out: it never reports."""
        self.calls.pop(worker, None)

    @rule(worker=worker_ids)
    def read(self, worker: int) -> None:
        self.expire_probe()
        view = self.shared.read(self.config, self.now)
        assert view.state == self.model.observed(self.now)

    # -- invariants --------------------------------------------------------------------

    @precondition(lambda self: hasattr(self, "shared"))
    @invariant()
    def agrees_with_the_model(self) -> None:
        self.expire_probe()
        view = self.shared.read(self.config, self.now)
        assert view.state == self.model.observed(self.now), (view, self.model)
        assert view.opened == self.model.opens
        probe_out = self.model.probe and self.model.observed(self.now) == "half_open"
        assert (view.probe_owner is not None) == probe_out, (view, self.model)
        if self.model.state == "closed":
            assert view.consecutive_failures == self.model.failures

    @precondition(lambda self: hasattr(self, "shared"))
    @invariant()
    def at_most_one_probe_out(self) -> None:
        live = [w for w, probe in self.calls.items() if probe and self.probe_holder == w and self.probe_until > self.now]
        assert len(live) <= 1, live


SharedBreakerMachine.TestCase.settings = MACHINE_SETTINGS
TestSharedBreakerMachine = SharedBreakerMachine.TestCase


# -- examples ---------------------------------------------------------------------------


def test_a_slice_left_unused_counts_until_it_comes_back() -> None:
    bucket = LeasedBucket(10, 10, updated=0)
    first = bucket.lease(10, 5.0, 0)
    assert (first.granted, first.wait_s, first.free) == (10, 0, 0)
    # Two seconds later the bucket would be full again, but the 10 out on lease still count.
    assert bucket.free_at(2.0) == 0
    back = bucket.lease(0, 5.0, 2.0, (first.lease_id, 4))  # six spent, four back
    assert back.free == 4
    assert (bucket.lease(10, 5.0, 2.0).granted, bucket.free_at(2.0)) == (4, 0)
    assert bucket.lease(0, 5.0, 2.0, (first.lease_id, 4)).free == 0  # given back once: a second time is ignored


def test_an_expired_lease_frees_its_tokens_and_cannot_be_given_back() -> None:
    bucket = LeasedBucket(10, 1, updated=0)
    held = bucket.lease(10, 2.0, 0)
    assert bucket.free_at(1.0) == 0
    # The lease held the whole capacity until 2: nothing refilled meanwhile; from 2 on, its tokens are gone.
    assert bucket.free_at(2.0) == 0 and bucket.free_at(3.0) == pytest.approx(1.0)
    assert bucket.lease(0, 2.0, 3.0, (held.lease_id, 10)).free == pytest.approx(1.0)  # expired: giving back mints nothing


def test_an_empty_bucket_reserves_and_the_waiting_workers_queue_up() -> None:
    bucket = LeasedBucket(20, 100, updated=0)
    first = bucket.lease(20, 1.0, 0)
    assert first.granted == 20
    assert bucket.lease(0, 1.0, 0, (first.lease_id, 0)).free == 0  # all spent at once, the lease closed
    second, third = bucket.lease(5, 1.0, 0), bucket.lease(5, 1.0, 0)
    assert (second.granted, third.granted) == (5, 5)
    assert second.wait_s == pytest.approx(0.05) and third.wait_s == pytest.approx(0.10)  # one after the other
    assert third.free == pytest.approx(-10)  # owed to the two reservations
    assert bucket.free_at(0.10) == pytest.approx(0)


def test_the_wait_covers_a_crashed_workers_lease() -> None:
    bucket = LeasedBucket(5, 100, updated=0)
    bucket.lease(5, 3.0, 0)  # taken by a worker that then dies
    answer = bucket.lease(5, 3.0, 0.5)
    assert answer.granted == 5 and answer.wait_s == pytest.approx(2.5 + 5 / 100)


def test_a_clock_that_goes_back_mints_nothing() -> None:
    bucket = LeasedBucket(10, 1, updated=100)
    assert bucket.lease(10, 1.0, 100).granted == 10
    # At 50 the bucket stands still at 100: the lease of 10 ends at 101, one token takes a second more.
    assert bucket.lease(1, 1.0, 50).wait_s == pytest.approx(2.0)
    assert bucket.free_at(50) == bucket.free_at(100) == -1 and bucket.free_at(102) == pytest.approx(0)


def test_a_changed_configuration_keeps_the_leases() -> None:
    bucket = LeasedBucket(10, 1, updated=0)
    bucket.lease(8, 10.0, 0)
    bucket.configure(5, 1, 0)
    assert bucket.free_at(0) == -3 and bucket.free_at(100) == 5  # under 5 - 8 nothing refills until the lease ends


def test_a_dead_probers_slot_frees_after_its_lease() -> None:
    shared, config = SharedBreaker(), BreakerConfig(failure_threshold=1, open_timeout_s=10, success_threshold=1)
    shared.report(config, "a", "failure", False, 0)
    assert not shared.admit(config, "b", 5.0, 9.9).allowed
    assert shared.admit(config, "a", 5.0, 10).probe  # a probes, then dies
    assert not shared.admit(config, "b", 5.0, 14.9).allowed
    second = shared.admit(config, "b", 5.0, 15)
    assert second.probe and second.probe_owner == "b"
    late = shared.report(config, "a", "success", True, 16)  # a's answer, late: not the probe any more
    assert late.state == "half_open" and late.stale_outcomes == 1 and late.probe_owner == "b"
    closed = shared.report(config, "b", "success", True, 16)
    assert closed.state == "closed" and closed.transitions == ("half_open->closed",)
