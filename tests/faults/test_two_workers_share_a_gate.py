"""Two worker stages of one channel, sharing one embedded State, see one token bucket and one breaker.

Each stage is a supervised SMS Provider with a gate of its own (actors/services/gate.py);
both gates lease their tokens from, and report to, the same State (opened by
reactor.backends.open_backends, as a node opens it), and both write the same send ledger.
They are driven with more deliveries than the rate allows, under MockClock (simulated
seconds, so the figures are exact and the run takes a few seconds of wall time).

Printed: the configured rate and burst, what each worker sent, both together, and the
bound capacity + rate x window; the same run with a State per worker (what the gates did
before: each its own bucket) shows what the bound catches. Asserted: the bound over every
window of the merged call times, not a speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.messages import Attempt
from actors.provider import Provider
from actors.services.gate import GateSettings, Limits, ResilienceGate
from protocol.channels import Channel
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, Outcome, RetryLater, Sent
from reactor.ask import Reply
from reactor.backends import BackendSettings, open_backends
from reactor.circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker
from reactor.mailbox import Mailbox
from reactor.ports import State
from reactor.supervisor import ChildSpec, RestartPolicy, Supervisor
from tests.reactor.test_shared_gate_properties import assert_within_the_bound
from tests.helpers import MemoryLedger

CAPACITY, RATE, SECONDS = 20.0, 100.0, 5.0


@asynccontextmanager
async def embedded(data_dir: Path) -> AsyncIterator[Any]:
    """The embedded State, opened as a node opens it (only the State: nothing else runs in a thread)."""
    urls = {setting: "embedded://" for setting in ("bus", "state", "store", "logstore")}
    settings = BackendSettings(urls, data_dir, {})
    async with open_backends(settings, {"state"}) as backends:
        yield backends


@dataclass
class Sms:
    """The provider, shared by both workers: who called when, and what the shared breaker said then."""

    state: State | None = None
    down: bool = False
    call_s: float = 0.0
    calls: list[tuple[float, str]] = field(default_factory=list)  # (at, worker)
    # (at, worker, the shared breaker's state, holds the probe, when it last opened)
    under: list[tuple[float, str, str, bool, float]] = field(default_factory=list)
    probes_out: int = 0
    max_probes_out: int = 0

    def client(self, worker: str) -> Any:
        sms = self

        class Client:
            gate: ResilienceGate

            async def send(self, delivery: Delivery) -> Outcome:
                now = trio.current_time()
                sms.calls.append((now, worker))
                probing = self.gate._holds_probe(delivery)  # this call is the worker's probe
                if sms.state is not None:
                    shared, holds, opened_at = peek(sms.state, self.gate, now)
                    sms.under.append((now, worker, shared, holds and probing, opened_at))
                sms.probes_out += probing
                sms.max_probes_out = max(sms.max_probes_out, sms.probes_out)
                try:
                    await trio.sleep(sms.call_s)
                finally:
                    sms.probes_out -= probing
                return RetryLater("sms provider down") if sms.down else Sent()

        return Client()


def peek(state: Any, gate: ResilienceGate, now: float) -> tuple[str, bool, float]:
    """The shared breaker as the State holds it (read without stepping it): its state, whether this gate holds
    its probe, when it last opened."""
    shared = state._breakers.get(gate.breaker_key)
    if shared is None:
        return BreakerState.CLOSED.value, False, -math.inf
    holds = shared.probe_owner == gate.owner and shared.probe_expires > now and shared.snapshot.probe_in_flight
    opened_at = shared.snapshot.open_until - gate.limits.breaker.open_timeout_s if shared.snapshot.opened else -math.inf
    return CircuitBreaker.restore(gate.limits.breaker, shared.snapshot).state_at(now).value, holds, opened_at


def delivery(worker: str, n: int) -> Delivery:
    return Delivery(f"01J{worker}{n:022d}", "u1", Channel.SMS, 0, Content(sms=SmsContent("hi")), address="+15555550100")


async def run_workers(states: list[State], store: Any, sms: Sms, limits: Limits, settings: GateSettings, seconds: float,
                      until: Any = None) -> list[ResilienceGate]:
    """Two worker stages fed as fast as they take deliveries for `seconds` (or until `until()` says stop)."""
    gates, stages, mailboxes = [], [], []
    for i, state in enumerate(states if len(states) == 2 else states * 2):
        name = "ab"[i]
        gate = ResilienceGate(Channel.SMS.value, limits, state, settings, owner=f"worker-{name}")
        client = sms.client(name)
        client.gate = gate
        mailbox: Mailbox[Attempt] = Mailbox(f"provider:sms:{name}", 16)
        provider = Provider(Channel.SMS, client, mailbox, store, gate)
        gates.append(gate)
        mailboxes.append(mailbox)
        child = ChildSpec("provider:sms", provider.run, stop=mailbox.close)
        stages.append(Supervisor(f"worker-{name}", [child], RestartPolicy()))
    end = trio.current_time() + seconds

    async def feed(i: int) -> None:
        n = 0
        while trio.current_time() < end and not (until and until()):
            reply: Reply[Outcome] = Reply()
            await mailboxes[i].send(Attempt(delivery("ab"[i], n), reply, maybe_sent=False))
            await reply.wait()
            n += 1

    async with trio.open_nursery() as nursery:
        for stage in stages:
            await nursery.start(stage.run)
        async with trio.open_nursery() as feeders:
            for i in range(2):
                feeders.start_soon(feed, i)
        for stage in stages:
            stage.stop()
    return gates


def report(label: str, sms: Sms) -> tuple[int, int, float]:
    times = sorted(at for at, _ in sms.calls)
    per = {w: sum(1 for _, who in sms.calls if who == w) for w in "ab"}
    window = times[-1] - times[0]
    bound = CAPACITY + RATE * window
    print(f"{label}: rate={RATE:g}/s burst={CAPACITY:g} | worker a={per['a']} worker b={per['b']} together={len(times)} "
          f"in {window:.3f} s | bound capacity + rate x window = {bound:.1f}")
    return per["a"], per["b"], bound


async def test_two_worker_stages_sharing_one_state_send_at_most_the_rate(tmp_path, autojump_clock) -> None:
    limits = Limits(CAPACITY, RATE, BreakerConfig())
    settings = GateSettings()  # slices of 0.05 s of the rate: 5 tokens a round trip
    real = time.perf_counter()
    async with embedded(tmp_path / "shared") as backends:
        shared = Sms()
        gates = await run_workers([backends.state], MemoryLedger(), shared, limits, settings, SECONDS)
        # The same two workers, each with a State of its own: two buckets.
        apart = Sms()
        async with embedded(tmp_path / "a") as a, embedded(tmp_path / "b") as b:
            await run_workers([a.state, b.state], MemoryLedger(), apart, limits, settings, SECONDS)
    a_sent, b_sent, bound = report("one State shared", shared)
    report("a State each (before)", apart)
    leases, reads = sum(g.lease_round_trips for g in gates), sum(g.breaker_round_trips for g in gates)
    per_trip, wall = len(shared.calls) / leases, time.perf_counter() - real
    print(f"shared gate: {leases} lease round trips for {len(shared.calls)} deliveries ({per_trip:.1f} a round trip), "
          f"{reads} breaker reads (at most one per worker per refresh_s); {SECONDS:g} simulated s in {wall:.1f} s")

    assert_within_the_bound([at for at, _ in shared.calls], CAPACITY, RATE)
    assert len(shared.calls) <= bound
    assert a_sent > 0 and b_sent > 0  # both workers took from the one bucket
    assert len(shared.calls) >= 0.9 * bound  # and the bucket is not starved by its slices: nearly all of it went out
    assert len(shared.calls) / leases >= 2  # slices: fewer round trips than deliveries
    with pytest.raises(AssertionError):  # a bucket each: twice the rate, which the same check catches
        assert_within_the_bound([at for at, _ in apart.calls], CAPACITY, RATE)


async def test_two_worker_stages_see_one_breaker(tmp_path, autojump_clock) -> None:
    config = BreakerConfig(failure_threshold=5, open_timeout_s=10.0, success_threshold=2)
    limits = Limits(1000.0, 1000.0, config)
    settings = GateSettings(refresh_s=0.05)
    async with embedded(tmp_path) as backends:
        sms = Sms(state=backends.state, down=True, call_s=0.01)

        async def recover() -> None:
            await trio.sleep(25)  # down through two open periods
            sms.down = False

        async with trio.open_nursery() as nursery:
            nursery.start_soon(recover)
            gates = await run_workers([backends.state], MemoryLedger(), sms, limits, settings, 40.0)
        final = await gates[0].view()

    failed = [c for c in sms.under if c[0] < 25]
    transitions: dict[str, int] = {}
    for gate in gates:
        for key, n in gate.transitions.items():
            transitions[key] = transitions.get(key, 0) + n
    per = {w: sum(1 for c in sms.under if c[1] == w) for w in "ab"}
    print(f"shared breaker: calls a={per['a']} b={per['b']} failed={len(failed)} transitions={transitions} "
          f"max probes out={sms.max_probes_out} final={final.state}")
    # F failures from both workers together opened it; the other worker's call in flight then may fail too.
    first_pause = next(i for i in range(1, len(failed)) if failed[i][0] - failed[i - 1][0] >= config.open_timeout_s)
    assert config.failure_threshold <= first_pause <= config.failure_threshold + 1
    assert {c[1] for c in failed[:first_pause]} == {"a", "b"}  # from both workers
    # Not closed at a call's start: the caller held the probe, or the breaker had opened less than refresh_s before.
    for at, worker, shared, holds, opened_at in sms.under:
        assert shared == "closed" or holds or at - opened_at < settings.refresh_s, (at, worker, shared, opened_at)
    assert sms.max_probes_out == 1  # one probe at a time across both workers
    assert transitions["closed->open"] == 1 and transitions["half_open->closed"] == 1
    assert transitions["half_open->open"] == transitions["open->half_open"] - 1  # each probe failed until the recovery
    assert final.state == "closed" and final.opened == transitions["closed->open"] + transitions["half_open->open"]
    # Recovered at 25 s: closed again once the open period ran out and S probes succeeded; from then on all calls closed.
    closed_at = min(c[0] for c in sms.under if c[0] >= 25 and c[2] == "closed")
    assert closed_at <= 25 + config.open_timeout_s + 1
    assert all(c[2] == "closed" for c in sms.under if c[0] >= closed_at)
