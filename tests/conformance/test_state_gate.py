"""Conformance of the State's gate operations: the shared bucket and breaker of a provider's workers.

What every State backend must keep (reactor/ports.py, the gate's block): leased tokens count
against the bucket until they come back or expire; a lease is given back once, and never
after it expired; lease ids are never reused; concurrent leases never hand out more than
the bucket holds, and an empty bucket reserves slices one after the other; the breaker opens on failures from any owners,
refuses while open, admits one probe across all owners, frees a dead prober's slot when
its lease ends, and counts a half-open outcome only from the probe's holder. All under
MockClock (each test names the `clock` fixture: pytest-trio picks the clock from a test's
own arguments): the State's own clock is Trio's.

The `state` fixture below yields the embedded States; at merge it becomes the conformance
suite's shared backend fixture. `test_the_checks_catch_broken_states` runs the same checks
against deliberately broken States and requires each to be caught.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from reactor.backends.embedded import MemoryState, SqliteState
from reactor.circuit_breaker import BreakerConfig
from reactor.ports import BreakerView, State, TokenLease

BUCKET = "gate:sms:bucket"
BREAKER = "gate:sms:breaker"
CONFIG = BreakerConfig(failure_threshold=3, open_timeout_s=10.0, success_threshold=2)


@asynccontextmanager
async def memory(tmp_path: Path) -> AsyncIterator[State]:
    yield MemoryState()


@asynccontextmanager
async def sqlite(tmp_path: Path) -> AsyncIterator[State]:
    state = SqliteState(tmp_path / "state.sqlite3")
    await state.open()
    try:
        yield state
    finally:
        await state.close()


@pytest.fixture
def clock(mock_clock: Any) -> Any:
    mock_clock.autojump_threshold = 0.03  # the SQLite backend opens in a thread
    return mock_clock


@pytest.fixture(params=[memory, sqlite], ids=["memory", "sqlite"])
async def state(request: Any, tmp_path: Path) -> AsyncIterator[State]:
    async with request.param(tmp_path) as opened:
        yield opened


async def lease(state: State, want: int, give_back: tuple[str, int] | None = None, capacity: float = 10, rate: float = 10,
                lease_s: float = 5.0) -> TokenLease:
    return await state.lease_tokens(BUCKET, want, capacity, rate, lease_s, give_back)


# -- the shared bucket ------------------------------------------------------------------


async def test_a_lease_grants_whole_tokens_up_to_what_is_free(state: State, clock: Any) -> None:
    first = await lease(state, 4)
    assert (first.granted, first.wait_s, first.free) == (4, 0.0, 6) and first.lease_id
    second = await lease(state, 10)  # only 6 left: a partial grant, at once
    assert (second.granted, second.wait_s, second.free) == (6, 0.0, 0) and second.lease_id != first.lease_id
    assert (await lease(state, 0)).free == 0  # want 0: a read
    nothing = await lease(state, 0, (second.lease_id, 0))
    assert (nothing.granted, nothing.lease_id, nothing.wait_s) == (0, "", 0.0)


async def test_leased_tokens_count_until_given_back_and_what_was_spent_is_gone(state: State, clock: Any) -> None:
    held = await lease(state, 10, lease_s=60)
    await trio.sleep(5)  # 5 s of refill would fill the bucket, but all 10 are out on lease
    assert (await lease(state, 0)).free == 0
    back = await lease(state, 0, (held.lease_id, 3))  # 7 spent, 3 back
    assert back.free == 3
    assert (await lease(state, 0, (held.lease_id, 3))).free == 3  # a second give back of the same lease: ignored
    assert (await lease(state, 5)).granted == 3


async def test_unused_is_clamped_to_the_lease(state: State, clock: Any) -> None:
    held = await lease(state, 2, lease_s=60)
    assert (await lease(state, 0, (held.lease_id, 50))).free == 10  # never more than it had
    other = await lease(state, 2, lease_s=60)
    assert (await lease(state, 0, (other.lease_id, -5))).free == 8  # never less than nothing


async def test_an_expired_lease_frees_its_tokens_once_and_cannot_be_given_back(state: State, clock: Any) -> None:
    held = await lease(state, 10, lease_s=2.0)
    await trio.sleep(1.0)
    assert (await lease(state, 0)).free == 0  # still out
    await trio.sleep(1.5)  # the lease ended at 2; refill since: 0.5 s
    assert (await lease(state, 0)).free == pytest.approx(5.0)
    assert (await lease(state, 0, (held.lease_id, 10))).free == pytest.approx(5.0)  # no mint


async def test_an_empty_bucket_reserves_and_callers_queue_up(state: State, clock: Any) -> None:
    first = await lease(state, 10, rate=100)
    await lease(state, 0, (first.lease_id, 0), rate=100)  # all ten spent: the lease closed
    waits = [(await lease(state, 3, rate=100)).wait_s for _ in range(3)]
    assert waits == pytest.approx([0.03, 0.06, 0.09])  # each slice once the refill has paid for it, one after the other
    assert (await lease(state, 0, rate=100)).free == pytest.approx(-9)  # owed to the reservations
    await trio.sleep(0.09)
    assert (await lease(state, 0, rate=100)).free == pytest.approx(0, abs=1e-9)


async def test_a_reservation_waits_out_a_dead_workers_lease(state: State, clock: Any) -> None:
    await lease(state, 10, lease_s=3.0, rate=100)  # a worker takes everything and dies
    reserved = await lease(state, 5, rate=100)
    assert reserved.granted == 5 and reserved.wait_s == pytest.approx(3.0 + 5 / 100)


async def test_lease_ids_are_never_reused(state: State, clock: Any) -> None:
    seen = set()
    for _ in range(30):
        got = await lease(state, 1, lease_s=0.5, rate=1000)
        assert got.lease_id and got.lease_id not in seen
        seen.add(got.lease_id)
        if len(seen) % 3 == 0:
            await lease(state, 0, (got.lease_id, 1))
        await trio.sleep(0.2)


async def test_concurrent_leases_never_hand_out_more_than_the_bucket_holds(state: State, clock: Any) -> None:
    answers: list[TokenLease] = []

    async def contend() -> None:
        answers.append(await lease(state, 3, capacity=20, rate=10, lease_s=60))

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(contend)
    now = [a.granted for a in answers if a.wait_s == 0]
    assert sum(now) == 20 and max(now) == 3  # at once: what the bucket held, no more
    later = sorted(a.wait_s for a in answers if a.wait_s > 0)
    assert len(later) == 40 - len(now) and len(set(later)) == len(later)  # the rest reserved, each at its own time


async def test_a_changed_configuration_keeps_the_leases_out(state: State, clock: Any) -> None:
    await lease(state, 8, lease_s=60)
    smaller = await state.lease_tokens(BUCKET, 0, 5, 10, 60)
    assert smaller.free <= 0  # 8 are out: nothing is free under a capacity of 5
    await trio.sleep(10)
    assert (await state.lease_tokens(BUCKET, 1, 5, 10, 60)).wait_s >= 50  # not until the 8 come back


# -- the shared breaker -----------------------------------------------------------------


async def admit(state: State, owner: str, probe_lease_s: float = 5.0) -> BreakerView:
    return await state.breaker_admit(BREAKER, CONFIG, owner, probe_lease_s)


async def report(state: State, owner: str, event: str, probe: bool = False) -> BreakerView:
    return await state.breaker_report(BREAKER, CONFIG, owner, event, probe)  # type: ignore[arg-type]


async def open_it(state: State) -> BreakerView:
    """Three failures, from three owners."""
    for owner in ("a", "b", "c"):
        view = await report(state, owner, "failure")
    return view


async def test_failures_from_any_owners_open_it_and_it_refuses_while_open(state: State, clock: Any) -> None:
    assert (await state.breaker_read(BREAKER, CONFIG)).state == "closed"
    await report(state, "a", "failure")
    await report(state, "b", "failure")
    assert (await state.breaker_read(BREAKER, CONFIG)).consecutive_failures == 2
    opened = await report(state, "c", "failure")
    assert opened.state == "open" and opened.transitions == ("closed->open",) and opened.retry_in_s == pytest.approx(10)
    await trio.sleep(4)
    refused = await admit(state, "a")
    assert not refused.allowed and refused.retry_in_s == pytest.approx(6) and refused.rejected == 1


async def test_a_success_resets_the_count_across_owners(state: State, clock: Any) -> None:
    await report(state, "a", "failure")
    await report(state, "b", "failure")
    await report(state, "c", "success")
    assert (await report(state, "a", "failure")).state == "closed"


async def test_half_open_admits_one_probe_across_all_owners(state: State, clock: Any) -> None:
    await open_it(state)
    await trio.sleep(10)
    views: dict[str, BreakerView] = {}

    async def ask(owner: str) -> None:
        views[owner] = await admit(state, owner)

    async with trio.open_nursery() as nursery:
        for owner in "abcdefgh":
            nursery.start_soon(ask, owner)
    probes = [owner for owner, view in views.items() if view.allowed]
    assert len(probes) == 1 and views[probes[0]].probe and views[probes[0]].probe_owner == probes[0]
    assert sum(view.transitions == ("open->half_open",) for view in views.values()) == 1


async def test_only_the_probes_holder_settles_it(state: State, clock: Any) -> None:
    await open_it(state)
    await trio.sleep(10)
    assert (await admit(state, "a")).probe
    stale = await report(state, "b", "failure", probe=True)  # b does not hold it
    assert stale.state == "half_open" and stale.probe_owner == "a" and stale.stale_outcomes == 1
    assert (await report(state, "b", "release", probe=True)).probe_owner == "a"
    assert (await report(state, "a", "success", probe=True)).consecutive_successes == 1
    assert (await admit(state, "b")).probe
    closed = await report(state, "b", "success", probe=True)
    assert closed.state == "closed" and closed.transitions == ("half_open->closed",)


async def test_a_failed_probe_opens_it_again_and_a_released_one_frees_the_slot(state: State, clock: Any) -> None:
    await open_it(state)
    await trio.sleep(10)
    assert (await admit(state, "a")).probe
    released = await report(state, "a", "release", probe=True)
    assert released.state == "half_open" and released.probe_owner is None
    assert (await admit(state, "b")).probe
    reopened = await report(state, "b", "failure", probe=True)
    assert reopened.state == "open" and reopened.transitions == ("half_open->open",) and reopened.opened == 2


async def test_a_dead_probers_slot_frees_when_its_lease_ends(state: State, clock: Any) -> None:
    await open_it(state)
    await trio.sleep(10)
    assert (await admit(state, "a", probe_lease_s=3)).probe  # a dies with it
    await trio.sleep(2.9)
    assert not (await admit(state, "b")).allowed
    await trio.sleep(0.1)
    taken = await admit(state, "b")
    assert taken.probe and taken.probe_owner == "b"
    late = await report(state, "a", "success", probe=True)  # a's answer, after its lease: not the probe's
    assert late.probe_owner == "b" and late.consecutive_successes == 0


async def test_outcomes_while_open_are_stale(state: State, clock: Any) -> None:
    await open_it(state)
    for event in ("success", "failure", "success"):
        view = await report(state, "d", event)
    assert view.state == "open" and view.stale_outcomes == 3 and view.retry_in_s == pytest.approx(10)


# -- the checks have teeth ----------------------------------------------------------------


class ForgetsLeasedTokens(MemoryState):
    """Refills over tokens out on lease: a take-tokens bucket with a lease id bolted on."""

    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None) -> TokenLease:
        answer = await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back)
        self._leased_buckets[key].leases.clear()
        return answer


class TakesBackExpiredLeases(MemoryState):
    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None) -> TokenLease:
        bucket = self._leased_buckets.get(key)
        if give_back is not None and bucket is not None and give_back[0] not in bucket.leases:
            bucket.free = min(bucket.capacity, bucket.free + give_back[1])
        return await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back)


class ReusesLeaseIds(MemoryState):
    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None) -> TokenLease:
        answer = await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back)
        bucket = self._leased_buckets[key]
        if answer.granted and len(bucket.leases) == 1:  # numbering starts again whenever nothing is out
            bucket.next_id = 1
        return answer


class RefusesInsteadOfReserving(MemoryState):
    """An empty bucket answers "come back later": the waiting callers then all wake at once and race."""

    async def lease_tokens(self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
                           give_back: tuple[str, int] | None = None) -> TokenLease:
        answer = await super().lease_tokens(key, want, capacity, refill_per_s, lease_s, give_back)
        if answer.wait_s > 0 and answer.granted:
            return await super().lease_tokens(key, 0, capacity, refill_per_s, lease_s, (answer.lease_id, answer.granted))
        return answer


class AdmitsAProbePerOwner(MemoryState):
    async def breaker_admit(self, key: str, config: BreakerConfig, owner: str, probe_lease_s: float) -> BreakerView:
        shared = self._breaker(key)
        if shared.probe_owner not in (None, owner):
            shared.snapshot = dataclasses.replace(shared.snapshot, probe_in_flight=False)
        return await super().breaker_admit(key, config, owner, probe_lease_s)


class KeepsADeadProbersSlot(MemoryState):
    def _breaker(self, key: str) -> Any:
        shared = super()._breaker(key)
        if shared.probe_owner is not None:
            shared.probe_expires = math.inf
        return shared


class CountsFailuresPerOwner(MemoryState):
    async def breaker_report(self, key: str, config: BreakerConfig, owner: str, event: Any, probe: bool) -> BreakerView:
        return await super().breaker_report(f"{key}:{owner}", config, owner, event, probe)

    async def breaker_read(self, key: str, config: BreakerConfig) -> BreakerView:
        return await super().breaker_read(key, config)


CHECKS: list[Callable[[State, Any], Any]] = [
    test_a_lease_grants_whole_tokens_up_to_what_is_free,
    test_leased_tokens_count_until_given_back_and_what_was_spent_is_gone,
    test_unused_is_clamped_to_the_lease,
    test_an_expired_lease_frees_its_tokens_once_and_cannot_be_given_back,
    test_an_empty_bucket_reserves_and_callers_queue_up,
    test_a_reservation_waits_out_a_dead_workers_lease,
    test_lease_ids_are_never_reused,
    test_concurrent_leases_never_hand_out_more_than_the_bucket_holds,
    test_a_changed_configuration_keeps_the_leases_out,
    test_failures_from_any_owners_open_it_and_it_refuses_while_open,
    test_a_success_resets_the_count_across_owners,
    test_half_open_admits_one_probe_across_all_owners,
    test_only_the_probes_holder_settles_it,
    test_a_failed_probe_opens_it_again_and_a_released_one_frees_the_slot,
    test_a_dead_probers_slot_frees_when_its_lease_ends,
    test_outcomes_while_open_are_stale,
]


@pytest.mark.parametrize(
    "broken",
    [ForgetsLeasedTokens, TakesBackExpiredLeases, ReusesLeaseIds, RefusesInsteadOfReserving,
     AdmitsAProbePerOwner, KeepsADeadProbersSlot, CountsFailuresPerOwner],
)
async def test_the_checks_catch_broken_states(broken: type[MemoryState], clock: Any) -> None:
    caught = []
    for check in CHECKS:
        try:
            await check(broken(), clock)
        except AssertionError:
            caught.append(check.__name__)
    print(f"{broken.__name__}: caught by {caught}")
    assert caught, f"no check caught {broken.__name__}"


async def test_the_real_states_pass_the_same_loop(clock: Any) -> None:
    for check in CHECKS:
        await check(MemoryState(), clock)
