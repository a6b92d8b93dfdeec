"""`herald simulate`: the delivery path of a node run under a virtual Trio clock, driven by a scenario's traffic.

What runs is Herald's own actors, wired as actors/app.py wires the worker and api parts of a
node: the Ingress (its SendPlanner: what POST /v1/notifications/batch hands a batch to), one
ConsumerGroup per channel with its PartitionConsumers (retries with backoff, the dead-letter
queue), one Provider per channel behind its ResilienceGate (the token bucket and the circuit
breaker, in the State), the Scheduler (due retries back onto the bus) and the Recorder (status
events into the log store), under their supervisors. Not HTTP: the simulation is of delivery,
not of the web server. The ports are in memory (reactor/backends/memory, MemoryState), so
nothing waits for a thread and simulated time jumps from one deadline to the next
(clock.py: what MockClock's autojump does, for less); the sandbox clients are replaced by scripted providers (clients.py).

Determinism: every random draw comes from one generator seeded by `seed`: the traffic's, each
scripted provider's, the notification ids', the retry jitter's (the consumer draws from the
`random` module: seeded here) and Trio's own scheduling order (its run loop shuffles batches
of runnable tasks with a generator of its own: seeded here). Wall time is the simulation's
(a fixed epoch plus Trio's clock). Counts are the actors' own: the Ingress's receipts, the
consumers' outcome counters (herald_deliveries_total), the gates' deferral counters and breaker
transitions (GET /v1/admin/circuits), and each Sent's delay as the provider saw it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from contextlib import contextmanager
from functools import partial

import trio

from protocol.api import NotificationRequest, Receipt
from protocol.channels import LANES, Channel, Lane
from protocol.problems import Problem
from protocol.content import Content, EmailContent, PushContent, Recipient, SmsContent
from reactor.ask import ask
from reactor.backends import local_state
from reactor.backends.memory import MemoryBus, MemoryLogStore, MemoryStore
from reactor.clock import use_wall_clock
from reactor.mailbox import Mailbox, Overflow
from reactor.supervisor import ChildSpec, RestartPolicy, Supervisor
from reactor.system import System

from ..app import provider_gate
from ..config import Config, ConfigError, load_config
from ..consumer import ConsumerGroup, PartitionConsumer, RetryPolicy
from ..ingress import IdGenerator, Ingress
from ..messages import Attempt, IngressMessage, RecorderMessage, SubmitBatch
from ..metrics import new_outcomes
from ..provider import Provider
from ..recorder import Recorder
from ..scheduler import ScheduleAt, Scheduler
from ..services.gate import ResilienceGate
from .clients import ScriptedProvider
from .clock import JumpingClock
from .scale import COUNT_COLUMNS, Scaling, scale_counts, scale_scenario
from .scenario import Curve, Scenario, ScenarioError

EPOCH_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: the simulation's minute 0 on its wall clock
MINUTE_S = 60.0
FIELDS = ("minute", "channel", "accepted", "delivered", "deferred_bucket", "deferred_breaker", "retried", "dead_lettered",
          "failed", "pending", "delay_p50_ms", "delay_p99_ms", "breaker", "transitions")


class SimulatedWallClock:
    """The simulation's wall clock: EPOCH_NS at minute 0, moving with Trio's (mock) clock."""

    def __init__(self, start: float) -> None:
        self.start = start
        self._now = trio.lowlevel.current_clock().current_time  # the run's clock, read directly (a read per status event)

    def now_ns(self) -> int:
        return EPOCH_NS + round((self._now() - self.start) * 1e9)


@dataclass(frozen=True)
class MinuteRow:
    """One channel's figures over one simulated minute."""

    minute: int
    channel: str
    accepted: int
    delivered: int
    deferred_bucket: int
    deferred_breaker: int
    retried: int
    dead_lettered: int
    failed: int
    pending: int  # at the minute's end: accepted and not yet delivered, dead-lettered or failed (the backlog)
    delay_p50_ms: int | None
    delay_p99_ms: int | None
    breaker: str  # the state at the minute's end
    transitions: str  # "closed->open" etc. during the minute, in the order of their names, ";"-separated with counts

    def values(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in FIELDS)


@dataclass
class Result:
    scenario: Scenario
    seed: int
    rows: list[MinuteRow] = field(default_factory=list)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> figure -> count over the run
    provider_calls: int = 0
    scale: int = 1  # the run was at 1/scale of the volumes: its counts (rows, totals, provider_calls) are multiplied back
    notifications_run: int = 0  # the notifications that went through the path (accepted / scale)


def scaled_back(result: Result, scaling: Scaling, scenario: Scenario) -> Result:
    """A scaled run's result as the scenario's: every count multiplied by the scaling's n; delays, states, transitions as they are."""
    n = scaling.n
    rows = [dataclasses.replace(r, **{c: getattr(r, c) * n for c in COUNT_COLUMNS}) for r in result.rows]
    run = sum(t["accepted"] for t in result.totals.values())
    totals = {c: scale_counts(t, n) for c, t in result.totals.items()}
    return Result(scenario, result.seed, rows, totals, result.provider_calls * n, n, run)


def percentile(values: Sequence[int], q: float) -> int | None:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: Knuth's product of uniforms below 30, a rounded normal above (its error is negligible there)."""
    if mean <= 0:
        return 0
    if mean < 30:
        limit, k, p = math.exp(-mean), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def herald_config(scenario: Scenario) -> Config:
    """Herald's settings for the run: the defaults and the scenario's [herald] table, checked as herald.toml's are."""
    known = {f.name for f in dataclasses.fields(Config)}
    for key in scenario.herald:
        if key not in known:
            raise ScenarioError(f"herald.{key}: unknown setting (the settings are the fields of Config in actors/config.py)")
    try:
        return load_config(None, env={}, **scenario.herald)
    except ConfigError as exc:
        raise ScenarioError(f"herald.{exc}") from None
    except TypeError as exc:
        raise ScenarioError(f"herald: {exc}") from None


def _request(channel: Channel, user: str, curve: Curve) -> NotificationRequest:
    if channel is Channel.EMAIL:
        return NotificationRequest(channels=[channel], user_id=user, priority=curve.priority,
                                   content=Content(email=EmailContent(subject="Simulated", text="hello")),
                                   to=Recipient(email=f"{user}@example.org"))
    if channel is Channel.SMS:
        return NotificationRequest(channels=[channel], user_id=user, priority=curve.priority,
                                   content=Content(sms=SmsContent("Simulated: hello")), to=Recipient(phone="+15555550100"))
    return NotificationRequest(channels=[channel], user_id=user, priority=curve.priority,
                               content=Content(push=PushContent("Simulated", "hello")), to=Recipient(device_token=f"token-{user}"))


@dataclass
class _Node:
    ingress_mb: Mailbox[IngressMessage]
    system: System
    ingress: Ingress
    providers: dict[Channel, Provider]
    gates: dict[Channel, ResilienceGate]
    clients: dict[Channel, ScriptedProvider]
    outcomes: dict[Channel, dict[str, int]]
    bus: MemoryBus
    store: MemoryStore
    logstore: MemoryLogStore


def _wire(config: Config, scenario: Scenario, rng: random.Random, start: float) -> _Node:
    """The node's delivery path for the scenario's channels, as actors/app.py's wire() builds it (see the module's docstring)."""
    channels = scenario.channels
    # ten minutes past the longest a delivery can wait: every outage and throttling window, and every backoff at its longest
    keep_ms = int((600 + scenario.longest_wait_s() + config.max_attempts * config.retry_max_s) * 1000)
    bus = MemoryBus({c.topic(lane): config.partitions_of(c) for c in channels for lane in LANES})
    store, logstore, state = MemoryStore(keep_ms), MemoryLogStore(keep_ms), local_state()
    policy = RestartPolicy()
    recorder_mb: Mailbox[RecorderMessage] = Mailbox("recorder", config.recorder_mailbox, Overflow.BLOCK)
    scheduler_mb: Mailbox[ScheduleAt] = Mailbox("scheduler", 1024, Overflow.BLOCK)
    ingress_mb: Mailbox[IngressMessage] = Mailbox("ingress", config.ingress_mailbox, Overflow.BLOCK)
    recorder = Recorder(logstore, recorder_mb, config.recorder_batch, config.commit_linger_ms / 1000)
    scheduler = Scheduler(bus, store, scheduler_mb, poll_s=None, owner="scheduler-simulated")
    clients = {c: ScriptedProvider(scenario.providers[c], random.Random(rng.getrandbits(64)), start) for c in channels}
    provider_mbs = {c: Mailbox[Attempt](f"provider:{c.value}", config.provider_mailbox, Overflow.BLOCK) for c in channels}
    critical_mbs = {c: Mailbox[Attempt](f"provider:{c.value}:critical", config.provider_mailbox, Overflow.BLOCK) for c in channels}
    gates = {c: provider_gate(config, c, clients[c], state) for c in channels}
    providers = {
        c: Provider(c, clients[c], provider_mbs[c], store, gates[c], max_in_flight=config.max_in_flight_of(c),
                    critical=critical_mbs[c], critical_reserve=config.critical_slots_of(c), throttle_wait_s=config.provider_throttle_wait_s)
        for c in channels
    }
    retry = RetryPolicy(config.max_attempts, config.retry_initial_s, config.retry_max_s)
    outcomes = {c: new_outcomes() for c in channels}

    def consumer_factory(channel: Channel) -> Callable[[Lane, int], PartitionConsumer]:
        def make(lane: Lane, partition: int) -> PartitionConsumer:
            provider_mb = critical_mbs[channel] if lane is Lane.CRITICAL else provider_mbs[channel]
            return PartitionConsumer(
                bus, f"herald-{channel.value}", channel, partition, provider_mb, recorder_mb, scheduler_mb, store,
                config.consumer_batch, retry, None, window=config.consumer_window, window_bytes=config.consumer_window_bytes,
                lane=lane, outcomes=outcomes[channel],
            )

        return make

    groups = {c: ConsumerGroup(bus, c, consumer_factory(c), policy) for c in channels}
    ingress = Ingress(bus, ingress_mb, recorder_mb, config.ingress_workers, scheduler=scheduler_mb)
    ingress.ids = IdGenerator(random.Random(rng.getrandbits(64)))
    delivery = [ChildSpec("scheduler", scheduler.run, stop=scheduler_mb.close)]
    for c, provider in providers.items():
        delivery.append(ChildSpec(f"provider:{c.value}", provider.run, stop=partial(_close_all, provider_mbs[c], critical_mbs[c])))
    system = System([
        Supervisor("recording", [ChildSpec("recorder", recorder.run, stop=recorder_mb.close)], policy),
        Supervisor("delivery", delivery, policy),
        Supervisor("consumers", [ChildSpec(f"consumer-group:{c.value}", g.run, stop=g.stop) for c, g in groups.items()], policy),
        Supervisor("ingress", [ChildSpec("ingress", ingress.run, stop=ingress_mb.close)], policy),
    ], grace_s=config.shutdown_grace_s)
    gate_of = {c: g for c, g in gates.items() if isinstance(g, ResilienceGate)}
    return _Node(ingress_mb, system, ingress, providers, gate_of, clients, outcomes, bus, store, logstore)


def _close_all(*mailboxes: Mailbox[Attempt]) -> None:
    for mailbox in mailboxes:
        mailbox.close()


class _Counts:
    """The cumulative counters a minute's row is the difference of."""

    def __init__(self, node: _Node, accepted: dict[Channel, int]) -> None:
        self.node = node
        self.accepted = accepted

    def read(self, channel: Channel) -> dict[str, int]:
        o = self.node.outcomes[channel]
        gate = self.node.gates.get(channel)
        return {
            "accepted": self.accepted[channel],
            "delivered": o["sent"] + o["delivered"],
            "deferred_bucket": gate.throttled if gate else 0,
            "deferred_breaker": gate.deferred if gate else 0,
            "retried": o["retry"],
            "dead_lettered": o["dead_lettered"],
            "failed": o["failed"],
        }


async def _traffic(scenario: Scenario, node: _Node, rng: random.Random, accepted: dict[Channel, int], start: float,
                   skip_empty_ticks: bool) -> None:
    """Every tick, each curve's arrivals for it, submitted as one batch (the HTTP batch route's path into the Ingress).

    A tick's arrivals are drawn before its instant (the draws are the same, in the same order). With skip_empty_ticks
    (a scaled run: at its low rates most ticks are empty, each a turn of Trio's loop for nothing) a tick without any
    is not waited for: the task sleeps until the next tick that has arrivals. An exact run waits for every tick, as it
    always has: a task woken at an instant another wakes at changes the order Trio runs them in (deterministic_trio),
    so skipping would change some exact runs' rows."""
    carry = [0.0] * len(scenario.traffic)
    ticks = math.ceil(scenario.duration_s / scenario.tick_s)
    for n in range(ticks):
        t = n * scenario.tick_s
        batches: list[tuple[Channel, tuple[NotificationRequest, ...]]] = []
        for i, curve in enumerate(scenario.traffic):
            mean = curve.rate_at(t) * scenario.tick_s
            if scenario.arrivals == "poisson":
                count = poisson(rng, mean)
            else:
                carry[i] += mean
                count = int(carry[i])
                carry[i] -= count
            if count:
                batches.append((curve.channel, tuple(_request(curve.channel, f"user-{rng.randrange(scenario.users)}", curve)
                                                     for _ in range(count))))
        if not batches and skip_empty_ticks:
            continue
        await trio.sleep_until(start + t)
        for channel, requests in batches:
            answers: list[Receipt | Problem] = await ask(node.ingress_mb.send, partial(SubmitBatch, requests))
            refused = [a for a in answers if not isinstance(a, Receipt)]
            if refused:  # the scenario's requests are well formed: a refusal is the simulation's defect, not a figure
                raise RuntimeError(f"the Ingress refused a simulated notification: {refused[0]!r}")
            accepted[channel] += len(answers)


def _transitions(before: dict[str, int], after: dict[str, int]) -> str:
    changed = {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] != before.get(k, 0)}
    return ";".join(f"{k}:{v}" for k, v in changed.items())


async def _sample(scenario: Scenario, node: _Node, counts: _Counts, result: Result, start: float) -> None:
    """At each simulated minute's end, each channel's row: the differences of the actors' counters over the minute."""
    channels = scenario.channels
    last = {c: counts.read(c) for c in channels}
    last_transitions = {c: dict(node.gates[c].transitions) if c in node.gates else {} for c in channels}
    minutes = math.ceil(scenario.duration_s / MINUTE_S)
    for minute in range(minutes):
        await trio.sleep_until(start + min((minute + 1) * MINUTE_S, scenario.duration_s))
        for c in channels:
            now = counts.read(c)
            delta = {k: now[k] - last[c][k] for k in now}
            delays = node.clients[c].drain_delays()
            gate = node.gates.get(c)
            state = (await gate.view()).state if gate else "none"
            transitions = dict(gate.transitions) if gate else {}
            result.rows.append(MinuteRow(
                minute + 1, c.value, delta["accepted"], delta["delivered"], delta["deferred_bucket"], delta["deferred_breaker"],
                delta["retried"], delta["dead_lettered"], delta["failed"],
                now["accepted"] - now["delivered"] - now["dead_lettered"] - now["failed"], percentile(delays, 0.5), percentile(delays, 0.99),
                state, _transitions(last_transitions[c], transitions),
            ))
            last[c], last_transitions[c] = now, transitions


async def run_scenario(scenario: Scenario, seed: int, config: Config | None = None, *, skip_empty_ticks: bool = False) -> Result:
    """Run the scenario in this Trio run (on a virtual clock: JumpingClock, or MockClock with autojump; see simulate()).

    It runs the scenario as given (its `scale` is simulate()'s to apply); skip_empty_ticks: see _traffic."""
    config = config or herald_config(scenario)
    rng = random.Random(seed)
    random.seed(rng.getrandbits(64))  # RetryPolicy.delay's jitter draws from the random module
    start = trio.current_time()
    use_wall_clock(SimulatedWallClock(start))
    node = _wire(config, scenario, rng, start)
    traffic_rng = random.Random(rng.getrandbits(64))
    accepted = dict.fromkeys(scenario.channels, 0)
    counts = _Counts(node, accepted)
    result = Result(scenario, seed)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.system.run)
        async with trio.open_nursery() as driving:
            driving.start_soon(_traffic, scenario, node, traffic_rng, accepted, start, skip_empty_ticks)
            driving.start_soon(_sample, scenario, node, counts, result, start)
        result.totals = {c.value: counts.read(c) for c in scenario.channels}
        result.provider_calls = sum(p.calls for p in node.providers.values())
        nursery.cancel_scope.cancel()  # the run is over: what is still in flight is not part of it
    return result


def simulate(scenario: Scenario, seed: int) -> Result:
    """Run the scenario to its end under a clock that jumps from one deadline to the next (clock.py); deterministic by seed.

    At the scenario's `scale` N > 1 what runs is the scenario at 1/N of its volumes (scale.py), and the result's counts
    are multiplied back by N."""
    config = herald_config(scenario)  # a bad [herald] table is refused before anything runs
    scaling = scale_scenario(scenario)  # a scale the scenario's limits cannot take is refused before anything runs, too
    if scaling.n > 1:
        config = herald_config(scaling.scenario)
    with deterministic_trio(seed):
        result = trio.run(partial(run_scenario, scaling.scenario, seed, config, skip_empty_ticks=scaling.n > 1),
                          clock=JumpingClock())
    return scaled_back(result, scaling, scenario)


@contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Within the block, Trio runs the same tasks in the same order every run; its state restored afterwards.

    Trio's run loop takes the tasks that became runnable in the order they were woken, which is not always the same
    from run to run: the tie between equal deadlines (common under a clock that jumps to the next deadline) is broken
    by id(cancel_scope), a memory address, and an Event wakes its waiters from a set. Trio has a mode for Hypothesis
    that sorts each batch of runnable tasks by their creation order and shuffles it with its own generator
    (trio._core._run: _ALLOW_DETERMINISTIC_SCHEDULING, _r, both private: checked here and by tests/simulate); the run
    uses it, the generator seeded from `seed`. The random module's state is restored too (the run seeds it)."""
    module = trio._core._run
    trio_random = getattr(module, "_r", None)
    mode = getattr(module, "_ALLOW_DETERMINISTIC_SCHEDULING", None)
    if not isinstance(trio_random, random.Random) or not isinstance(mode, bool):
        raise RuntimeError("this Trio keeps its scheduling order elsewhere: herald simulate cannot make it deterministic "
                           "(actors/simulate/run.py, deterministic_trio)")
    states = trio_random.getstate(), random.getstate()
    trio_random.seed(random.Random(seed ^ 0x5EED).getrandbits(64))
    setattr(module, "_ALLOW_DETERMINISTIC_SCHEDULING", True)
    try:
        yield
    finally:
        setattr(module, "_ALLOW_DETERMINISTIC_SCHEDULING", mode)
        trio_random.setstate(states[0])
        random.setstate(states[1])


__all__ = ["FIELDS", "MinuteRow", "Result", "deterministic_trio", "herald_config", "percentile", "run_scenario", "scaled_back", "simulate"]
