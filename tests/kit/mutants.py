"""Deliberately broken implementations: each one mistake an implementation could make, each caught by its machine.

PURE_MUTANTS: a few of the pure machines' (test_properties_catch_bugs.py holds them all). STATE_MUTANTS: States whose
gate operations are wrong the way a State backend (a Lua script, a CAS) could be wrong. A Redis backend's mutants
(its scripts with the same mistakes) are more rows of STATE_MUTANTS.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from reactor.backends.embedded import MemoryState
from reactor.circuit_breaker import BreakerConfig
from reactor.gate_state import LeasedBucket
from reactor.ports import BreakerEvent, BreakerView, TokenLease
from tests.conformance.broken.state import AdmitsAProbePerOwner
from tests.reactor.test_properties_catch_bugs import AdmitsTwoProbes, RefillsOverLeasedTokens, RefillsPastCapacity, TakesTheReserve


class RefillsBeforeCheckingCapacity(MemoryState):
    """Adds the refill since the last call before looking at the cap (capacity minus what is out on lease)."""

    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        bucket = self._leased_buckets.get(key)
        now = trio.current_time()
        if bucket is not None and now > bucket.updated and not any(lease.expires <= now for lease in bucket.leases.values()):
            bucket.free = min(bucket.capacity, bucket.free + (now - bucket.updated) * bucket.refill_per_s)
            bucket.updated = now
        return await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back, reserve)


class IgnoresTheReserve(MemoryState):
    """Drops the reserve a bulk lane's lease asks with: bulk takes the critical lane's last tokens."""

    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        return await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back)


class RacyLease(MemoryState):
    """Reads the bucket, answers after a round trip, writes it back: a GET then SET where one script was meant."""

    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None, reserve: int = 0) -> TokenLease:
        now = trio.current_time()
        if key not in self._leased_buckets:
            self._leased_buckets[key] = LeasedBucket(capacity, refill_per_s, updated=now)
        read = copy.deepcopy(self._leased_buckets[key])
        await trio.lowlevel.checkpoint()  # the round trip between the read and the write
        answer = read.lease(want, lease_s, now, give_back, reserve)
        self._leased_buckets[key] = read
        return answer


class BreakerCasLetsTwoProbesThrough(MemoryState):
    """Reads the breaker, admits after a round trip, writes it back: two workers asking at once both get the probe."""

    async def breaker_admit(self, key: str, config: BreakerConfig, owner: str, probe_lease_s: float) -> BreakerView:
        read = copy.deepcopy(self._breaker(key))
        await trio.lowlevel.checkpoint()
        view = read.admit(config, owner, probe_lease_s, trio.current_time())
        self._breakers[key] = read
        return view


class BreakerReportLosesAnUpdate(MemoryState):
    """Reads the breaker, applies the outcome after a round trip, writes it back: outcomes at once overwrite each other."""

    async def breaker_report(self, key: str, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool) -> BreakerView:
        read = copy.deepcopy(self._breaker(key))
        await trio.lowlevel.checkpoint()
        view = read.report(config, owner, event, probe, trio.current_time())
        self._breakers[key] = read
        return view


# -- the Redis State's scripts with the same mistakes (tests/kit/implementations.py runs them on a redis-server)


def redis_refills_before_checking_capacity() -> type:
    """The lease script adds the refill since the last call before looking at the cap (capacity minus what is out)."""
    from reactor.backends.redis import RedisState, scripts

    anchor = "now = advance(now)\n"
    assert scripts.LEASE.count(anchor) == 1, "the lease script changed: move the mutation"
    mutated = scripts.LEASE.replace(anchor, """
local none_expired = true
for _, lease in ipairs(leases) do if lease[3] <= now then none_expired = false end end
if now > updated and none_expired then
  free = math.min(cap, free + (now - updated) * rt)
  updated = now
end
""" + anchor)

    class RedisRefillsBeforeCheckingCapacity(RedisState):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._lease = self.client.redis.register_script(mutated)

    return RedisRefillsBeforeCheckingCapacity


def redis_breaker_cas_lets_two_probes_through() -> type:
    """breaker_admit as a read (one script call), a round trip, then a write of the probe: a CAS without the compare."""
    from reactor.backends.redis import RedisState

    class RedisBreakerCasLetsTwoProbesThrough(RedisState):  # type: ignore[misc,valid-type]
        async def breaker_admit(self, key: str, config: BreakerConfig, owner: str, probe_lease_s: float) -> BreakerView:
            seen = await self.breaker_read(key, config)
            if seen.state != "half_open" or seen.probe_owner is not None:
                return await super().breaker_admit(key, config, owner, probe_lease_s)
            await trio.lowlevel.checkpoint()  # between the read and the write: another worker reads the same
            (name,) = self._gate_keys(key, "breaker")
            now = self.clock() if self.clock is not None else trio.current_time()
            fields = {"state": "half_open", "pif": "1", "probe_owner": owner, "probe_expires": repr(now + probe_lease_s),
                      "probes": seen.probes + 1, "admitted": seen.admitted + 1, "failures": 0, "successes": 0}
            await self.client.call(lambda r: r.hset(name, mapping=fields))
            return dataclasses.replace(seen, allowed=True, probe=True, probe_owner=owner, probes=seen.probes + 1,
                                       admitted=seen.admitted + 1)

    return RedisBreakerCasLetsTwoProbesThrough


PURE_MUTANTS: list[tuple[str, str, type, str]] = [
    ("bucket-refills-past-capacity", "bucket", RefillsPastCapacity, "the refill is not capped at the capacity"),
    ("breaker-admits-two-probes", "breaker", AdmitsTwoProbes, "half-open admits a second probe"),
    ("leased-bucket-refills-over-leases", "leased-bucket", RefillsOverLeasedTokens, "refills as if nothing were on lease"),
    ("leased-bucket-takes-the-reserve", "leased-bucket", TakesTheReserve, "a bulk lease takes the reserve"),
]

STATE_MUTANTS: list[tuple[str, str, type[MemoryState], str]] = [
    ("state-refills-before-checking-capacity", "leased-bucket", RefillsBeforeCheckingCapacity,
     "the State refills before applying the cap of capacity minus leased"),
    ("state-ignores-the-reserve", "leased-bucket", IgnoresTheReserve, "the State drops a bulk lease's reserve"),
    ("state-racy-lease", "leased-bucket", RacyLease, "the State's lease is a read, a round trip, a write"),
    ("state-admits-a-probe-per-owner", "shared-breaker", AdmitsAProbePerOwner, "the State gives each worker its own probe"),
    ("state-breaker-cas-lets-two-probes-through", "shared-breaker", BreakerCasLetsTwoProbesThrough,
     "the State's admit is a read, a round trip, a write"),
    ("state-breaker-report-loses-an-update", "shared-breaker", BreakerReportLosesAnUpdate,
     "the State's report is a read, a round trip, a write"),
]


# (name, kind, the RedisState subclass (made when asked), what): run on tests/kit/implementations.py's redis-server
REDIS_MUTANTS: list[tuple[str, str, Any, str]] = [
    ("redis-refills-before-checking-capacity", "leased-bucket", redis_refills_before_checking_capacity,
     "the Redis lease script refills before applying the cap of capacity minus leased"),
    ("redis-breaker-cas-lets-two-probes-through", "shared-breaker", redis_breaker_cas_lets_two_probes_through,
     "the Redis breaker's admit is a read, a round trip, a write"),
]


def factory_of(cls: type[MemoryState]) -> Any:
    @asynccontextmanager
    async def open_state() -> AsyncIterator[MemoryState]:
        yield cls()

    return open_state
