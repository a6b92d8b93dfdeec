"""The state a Provider's workers share, as pure machines: a leased token bucket, a breaker with a probe lease.

They are what a State backend keeps per key for the gate operations of reactor/ports.py
(`lease_tokens`, `breaker_admit`, `breaker_report`, `breaker_read`); the embedded State
applies them in-process, each call one atomic step (no checkpoint inside), and a Redis
backend ports each step to one Lua script over the same fields. Like the bucket and the
breaker they build on, they are told the time (the State's own clock), never read one.

LeasedBucket: one token bucket for N workers, handed out in slices. A worker leases a
slice of whole tokens for `lease_s` seconds in one round trip, spends it locally, and
gives back what it did not use with its next lease (or lets it expire). The tokens out on
lease count against the bucket until they come back or expire: free tokens refill only up
to `capacity - leased`. So free + leased <= capacity at every instant, and since a worker
spends a token only while its lease is valid here, the tokens spent in any window
[t1, t2], across all workers, are at most capacity + refill_per_s * (t2 - t1): the same
bound as one TokenBucket (tests/reactor/test_gate_state_properties.py checks it).

When nothing is free, the lease is a reservation: the slice is taken at once, free goes
below zero (a debt), and the answer says how long until the refill has paid for it; the
worker spends it from then on, for `lease_s`. A reservation is a take at that later
instant, so the bound holds as before, and every round trip yields a slice: N workers
waiting on an empty bucket queue up behind each other instead of all waking at the
same instant and all but one coming back empty.

A reserve (the priority lanes, docs/reliability.md): a lease asked with `reserve` r > 0 (a
bulk lane's) is granted only the whole tokens above r, and never a reservation: when
floor(free) <= r it gets nothing and the time until free would reach r + 1. So bulk
callers leave the last r tokens, and every debt, to callers asking with no reserve (the
critical lane), which take them as before.

SharedBreaker: one reactor.circuit_breaker.CircuitBreaker for N workers, kept as a
BreakerSnapshot; each step restores the pure machine, applies one event and snapshots it
again, so the pure machine stays the one statement of the rules. What it adds is who holds
the half-open probe, and a lease on it: a probe whose owner does not report within
`probe_lease_s` is released, so a worker that died mid-probe blocks the others for no
longer than that. An outcome in half-open counts only from the probe's holder.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

from reactor.circuit_breaker import BreakerConfig, BreakerSnapshot, BreakerState, CircuitBreaker
from reactor.ports import BreakerEvent, BreakerView, TokenLease

_INCARNATIONS = itertools.count(1)  # lease ids carry their bucket's incarnation: a bucket made again never reuses one


@dataclass(frozen=True)
class Lease:
    tokens: int
    expires: float  # its tokens may be spent until then (from `starts` on: a reservation starts later)


def _check_config(capacity: float, refill_per_s: float) -> None:
    if not (0 < capacity < math.inf and 0 < refill_per_s < math.inf):
        raise ValueError("capacity and refill rate must be positive and finite")


@dataclass
class LeasedBucket:
    capacity: float
    refill_per_s: float
    updated: float = 0.0
    free: float = -1.0  # negative: start full
    leases: dict[str, Lease] = field(default_factory=dict)
    next_id: int = 1
    # Lease ids are never reused for a key, even by a bucket made again after an eviction (a Redis
    # backend: INCR on a counter key that outlives the bucket's hash).
    incarnation: int = field(default_factory=lambda: next(_INCARNATIONS))
    # statistics
    granted_total: int = field(default=0, compare=False)
    given_back: int = field(default=0, compare=False)
    expired_tokens: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        _check_config(self.capacity, self.refill_per_s)
        if not math.isfinite(self.updated):
            raise ValueError(f"updated must be a finite time, got {self.updated!r}")
        if self.free < 0:
            self.free = self.capacity

    @property
    def leased(self) -> int:
        return sum(lease.tokens for lease in self.leases.values())

    # -- the arithmetic: one routine for what happens and for what would happen ---------

    def _project(self, until: float) -> tuple[float, float, list[str]]:
        """(free, time, expired lease ids) if the bucket were left alone until `until` (not before `updated`)."""
        free, at, leased = self.free, self.updated, self.leased
        expired = []
        for lease_id, lease in sorted(self.leases.items(), key=lambda item: (item[1].expires, item[0])):
            if lease.expires > until:
                break
            if lease.expires > at:
                free = self._refilled(free, lease.expires - at, leased)
                at = lease.expires
            leased -= lease.tokens
            expired.append(lease_id)
        if until > at:
            free = self._refilled(free, until - at, leased)
            at = until
        return free, at, expired

    def _refilled(self, free: float, elapsed: float, leased: int) -> float:
        # Free may be below 0: tokens reserved ahead of time (a debt the refill pays off first).
        return min(self.capacity - leased, free + elapsed * self.refill_per_s)

    def _advance(self, now: float) -> float:
        """Expire and refill up to now (a clock gone back counts as standing still); returns the effective now."""
        now = max(now, self.updated)
        free, _, expired = self._project(now)
        for lease_id in expired:
            self.expired_tokens += self.leases.pop(lease_id).tokens
        self.free, self.updated = free, now
        return now

    def free_at(self, now: float) -> float:
        """Free tokens at `now` (a query: nothing changes)."""
        return self._project(max(now, self.updated))[0]

    def time_until(self, n: int, now: float) -> float:
        """Seconds from `now` until floor(free) >= n if nothing else happens; inf if n exceeds the capacity.

        Exact enough to wait on: `free_at(now + wait) >= n`, nudged up as TokenBucket.time_until is.
        """
        if n <= 0:
            return 0.0
        if n > self.capacity:
            return math.inf
        start = max(now, self.updated)
        if self.free_at(start) >= n:
            return start - now
        # In real arithmetic: walk the segments between expiries, each refilling under its own cap.
        free, at, leased = self.free_at(start), start, self.leased
        for lease in sorted(self.leases.values(), key=lambda lease: lease.expires):
            if lease.expires <= at:
                leased -= lease.tokens
                continue
            if self.capacity - leased >= n:
                reach = at + (n - free) / self.refill_per_s
                if reach <= lease.expires:
                    break
            free = self._refilled(free, lease.expires - at, leased)
            at = lease.expires
            leased -= lease.tokens
        wait = max(0.0, at + max(0.0, n - free) / self.refill_per_s - now)
        step = math.ulp(abs(now) + wait)
        while self.free_at(now + wait) < n:
            wait += step
            step *= 2
        return wait

    # -- the operation --------------------------------------------------------------------

    def configure(self, capacity: float, refill_per_s: float, now: float) -> None:
        """A changed capacity or rate applies from `now` on; the leases out are kept."""
        if capacity == self.capacity and refill_per_s == self.refill_per_s:
            return
        _check_config(capacity, refill_per_s)
        self._advance(now)
        self.capacity, self.refill_per_s = capacity, refill_per_s
        self.free = min(self.free, capacity - self.leased)

    def lease(
        self, want: int, lease_s: float, now: float, give_back: tuple[str, int] | None = None, reserve: int = 0,
    ) -> TokenLease:
        """One step of State.lease_tokens (reactor/ports.py states it; this is it)."""
        if want < 0 or not (0 < lease_s < math.inf) or not math.isfinite(now):
            raise ValueError(f"want must be >= 0, lease_s positive and finite, now finite: {want!r}, {lease_s!r}, {now!r}")
        if reserve < 0:
            raise ValueError(f"reserve must be >= 0, got {reserve!r}")
        now = self._advance(now)
        if give_back is not None:
            lease_id, unused = give_back
            lease = self.leases.pop(lease_id, None)
            if lease is not None:
                back = min(max(unused, 0), lease.tokens)
                self.free = min(self.capacity - self.leased, self.free + back)
                self.given_back += back
        if reserve > 0:  # a bulk caller: only what lies above the reserve, never a reservation (no debt to wait behind)
            granted = min(want, math.floor(self.free) - reserve)
            if granted <= 0:
                return TokenLease("", 0, self.time_until(reserve + 1, now) if want > 0 else 0.0, self.free)
            return self._grant(granted, 0.0, lease_s, now)
        granted, wait = min(want, math.floor(self.free)), 0.0
        if granted <= 0 < want:  # nothing free: reserve a slice ahead, to be spent once the refill has paid for it
            granted = min(want, math.floor(self.capacity))
            wait = self.time_until(granted, now) if granted > 0 else math.inf
        if granted <= 0:
            return TokenLease("", 0, wait, self.free)
        return self._grant(granted, wait, lease_s, now)

    def _grant(self, granted: int, wait: float, lease_s: float, now: float) -> TokenLease:
        lease_id = f"{self.incarnation}.{self.next_id}"
        self.next_id += 1
        self.free -= granted
        self.leases[lease_id] = Lease(granted, now + wait + lease_s)
        self.granted_total += granted
        return TokenLease(lease_id, granted, wait, self.free)


@dataclass
class SharedBreaker:
    snapshot: BreakerSnapshot = field(default_factory=BreakerSnapshot)
    probe_owner: str | None = None
    probe_expires: float = 0.0

    def _restore(self, config: BreakerConfig, now: float) -> CircuitBreaker:
        machine = CircuitBreaker.restore(config, self.snapshot)
        if self.probe_owner is not None and self.probe_expires <= now:
            machine.release_probe()  # the prober did not report in time: free the slot for someone else
            self.probe_owner = None
        return machine

    def _answer(self, machine: CircuitBreaker, now: float, allowed: bool = False, probe: bool = False) -> BreakerView:
        transitions = tuple(f"{t.from_state.value}->{t.to_state.value}" for t in machine.drain_transitions())
        self.snapshot = machine.snapshot()
        if not self.snapshot.probe_in_flight:
            self.probe_owner = None
        state = machine.state_at(now)
        snap = self.snapshot
        return BreakerView(
            state=state.value,
            consecutive_failures=snap.failures,
            consecutive_successes=snap.successes,
            retry_in_s=machine.time_until_allowed(now) if state is BreakerState.OPEN else 0.0,
            probe_owner=self.probe_owner,
            opened=snap.opened,
            admitted=snap.admitted,
            rejected=snap.rejected,
            probes=snap.probes,
            stale_outcomes=snap.stale,
            allowed=allowed,
            probe=probe,
            transitions=transitions,
        )

    def admit(self, config: BreakerConfig, owner: str, probe_lease_s: float, now: float) -> BreakerView:
        """One step of State.breaker_admit."""
        if not (0 < probe_lease_s < math.inf):
            raise ValueError(f"probe_lease_s must be positive and finite, got {probe_lease_s!r}")
        machine = self._restore(config, now)
        allowed = machine.allow(now)
        probe = allowed and machine.state is BreakerState.HALF_OPEN
        if probe:
            self.probe_owner, self.probe_expires = owner, now + probe_lease_s
        return self._answer(machine, now, allowed, probe)

    def report(self, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool, now: float) -> BreakerView:
        """One step of State.breaker_report."""
        if event not in ("success", "failure", "release"):
            raise ValueError(f"unknown breaker event {event!r}")
        machine = self._restore(config, now)
        holder = probe and self.probe_owner == owner and machine.statistics().probe_in_flight
        if machine.state is BreakerState.HALF_OPEN and not holder:
            if event != "release":  # an outcome that is not the probe's: stale, counted as the pure machine counts one
                snapshot = machine.snapshot()
                machine = CircuitBreaker.restore(config, dataclasses.replace(snapshot, stale=snapshot.stale + 1))
            return self._answer(machine, now)
        if event == "success":
            machine.record_success(now)
        elif event == "failure":
            machine.record_failure(now)
        else:
            machine.release_probe()
        return self._answer(machine, now)

    def read(self, config: BreakerConfig, now: float) -> BreakerView:
        """One step of State.breaker_read."""
        return self._answer(self._restore(config, now), now)
