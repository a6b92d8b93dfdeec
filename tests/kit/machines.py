"""The machines of tests/reactor/*_properties.py, pointed at an implementation, plus N workers racing through a State.

`machine_for(target)` gives the RuleBasedStateMachine that drives the target's implementation. State-backed targets
get, besides every rule of the pure machine, a rule where several workers' round trips run at once (in an order and
with interleavings Hypothesis chooses), checked against what any serial order allows:

* leases: the tokens granted at once, all workers together, are at most the whole tokens free before (plus those
  given back); every request for tokens is answered with a slice; the window bound (capacity + rate x window, all
  workers together) and free + leased <= capacity keep holding (the machine's invariants);
* admits: as many calls admitted as one serial order admits (the reference model fired once per worker), and at
  most one of them a half-open probe.
"""

from __future__ import annotations

import copy
import itertools
import math
from fractions import Fraction
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from tests.kit.implementations import StateLeasedBucket, StateSharedBreaker, shuffled
from tests.reactor.test_circuit_breaker_properties import CircuitBreakerMachine
from tests.reactor.test_gate_state_properties import WORKERS, LeasedBucketMachine, SharedBreakerMachine
from tests.reactor.test_token_bucket_properties import TokenBucketMachine

MACHINES: dict[str, tuple[type[RuleBasedStateMachine], str]] = {
    "bucket": (TokenBucketMachine, "bucket_class"),
    "breaker": (CircuitBreakerMachine, "breaker_class"),
    "leased-bucket": (LeasedBucketMachine, "bucket_class"),
    "shared-breaker": (SharedBreakerMachine, "breaker_class"),
}

racers = st.lists(st.integers(0, WORKERS - 1), min_size=2, max_size=WORKERS, unique=True)
interleavings = st.tuples(st.integers(0, 2**16), st.lists(st.integers(0, 3), min_size=WORKERS, max_size=WORKERS))


class RacingLeases(LeasedBucketMachine):
    """LeasedBucketMachine over a State, plus workers leasing at once."""

    @rule(workers=racers, want=st.integers(1, 12) | st.sampled_from([5, 50]), lease_s=st.floats(0.01, 5.0),
          how=interleavings)
    def workers_lease_at_once(self, workers: list[int], want: int, lease_s: float, how: tuple[int, list[int]]) -> None:
        bucket: StateLeasedBucket = self.bucket  # type: ignore[assignment]
        free_before = Fraction(bucket.free_at(self.now))
        for worker in workers:
            self.slices.pop(worker, None)  # dropped: it expires by itself (giving back is the serial rules' part)
        answers = bucket.session.race(
            self.now, [bucket.operation(want, lease_s) for _ in workers], shuffled(how[0], len(workers)), how[1],
        )
        at_once = sum(a.granted for a in answers if a.wait_s == 0)
        assert at_once <= max(0, math.floor(free_before + self.eps)), (
            f"{at_once} tokens granted at once to {len(workers)} workers with {float(free_before)} free"
        )
        for worker, answer in zip(workers, answers, strict=True):
            if math.floor(self.capacity) == 0:
                continue
            assert answer.granted > 0 and answer.lease_id, "a request for tokens always gets a slice, at once or reserved"
            self.slices[worker] = (answer.lease_id, answer.granted, self.now + answer.wait_s, self.now + answer.wait_s + lease_s)

    def teardown(self) -> None:
        if hasattr(self, "bucket"):
            self.bucket.close()  # type: ignore[attr-defined]


class RacingAdmits(SharedBreakerMachine):
    """SharedBreakerMachine over a State, plus workers asking at once (at the open timeout's end, where it matters)."""

    @precondition(lambda self: hasattr(self, "shared"))
    @rule(workers=racers, how=interleavings, at_deadline=st.booleans())
    def workers_admit_at_once(self, workers: list[int], how: tuple[int, list[int]], at_deadline: bool) -> None:
        if at_deadline and self.model.state == "open":
            self.now = max(self.now, self.model.open_until)
        workers = [w for w in workers if w not in self.calls]  # a worker makes one call at a time
        if len(workers) < 2:
            return
        self.expire_probe()
        observed = self.model.observed(self.now)
        shared: StateSharedBreaker = self.shared  # type: ignore[assignment]
        views = shared.session.race(
            self.now, [shared.admit_operation(self.config, f"w{w}", self.probe_lease) for w in workers],
            shuffled(how[0], len(workers)), how[1],
        )
        expected = [self.model.fire("allow", self.now) for _ in workers]  # one serial order: any gives the same count
        allowed = [view.allowed for view in views]
        assert sum(allowed) == sum(bool(e) for e in expected), (observed, views)
        probes = [w for w, view in zip(workers, views, strict=True) if view.probe]
        assert len(probes) <= 1, f"{len(probes)} workers got the half-open probe at once: {probes}"
        for worker, view in zip(workers, views, strict=True):
            if view.allowed:
                self.calls[worker] = view.probe
                assert view.probe == (observed == "half_open")
                if view.probe:
                    self.probe_holder, self.probe_until = worker, self.now + self.probe_lease

    @precondition(lambda self: hasattr(self, "shared"))
    @rule(reports=st.lists(st.tuples(st.integers(0, WORKERS - 1), st.sampled_from(["success", "failure", "failure", "release"])),
                           min_size=2, max_size=WORKERS, unique_by=lambda r: r[0]),
          how=interleavings)
    def workers_report_at_once(self, reports: list[tuple[int, str]], how: tuple[int, list[int]]) -> None:
        """Workers' outcomes arrive at once: the breaker ends as one serial order of them leaves the model."""
        self.expire_probe()
        probes = {worker: self.calls.pop(worker, False) for worker, _ in reports}
        shared: StateSharedBreaker = self.shared  # type: ignore[assignment]
        shared.session.race(
            self.now, [shared.report_operation(self.config, f"w{w}", e, probes[w]) for w, e in reports],  # type: ignore[arg-type]
            shuffled(how[0], len(reports)), how[1],
        )
        view = shared.read(self.config, self.now)
        candidates = []
        for order in itertools.permutations(reports):
            model, holder = copy.deepcopy(self.model), self.probe_holder
            for worker, event in order:
                settles = probes[worker] and holder == worker
                if model.state == "half_open" and not settles:
                    continue  # not the probe's outcome: it counts for nothing
                model.fire(event, self.now)
                if settles:
                    holder = None
            seen = (model.observed(self.now), model.opens, model.failures if model.state == "closed" else 0,
                    model.successes if model.state == "half_open" else 0)
            candidates.append((seen, model, holder))
        got = (view.state, view.opened, view.consecutive_failures if view.state == "closed" else 0,
               view.consecutive_successes if view.state == "half_open" else 0)
        matching = [(model, holder) for seen, model, holder in candidates if seen == got]
        assert matching, f"{got} after {reports} at once: no serial order leaves that ({sorted({c[0] for c in candidates})})"
        self.model, self.probe_holder = matching[0]

    def teardown(self) -> None:
        if hasattr(self, "shared"):
            self.shared.close()  # type: ignore[attr-defined]


RACING: dict[str, type[RuleBasedStateMachine]] = {"leased-bucket": RacingLeases, "shared-breaker": RacingAdmits}


def machine_for(kind: str, implementation: type, state_backed: bool, name: str) -> type[RuleBasedStateMachine]:
    base, attribute = MACHINES[kind]
    if state_backed:
        base = RACING[kind]
    attrs: dict[str, Any] = {attribute: implementation}
    return type(name, (base,), attrs)
