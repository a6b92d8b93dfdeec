"""The Provider's gate: a token bucket and a circuit breaker in front of the channel client, shared by its workers.

The authoritative bucket and breaker of a provider live in the State port (reactor/ports.py,
the gate's block; reactor/gate_state.py holds the pure machines a backend applies), so N
workers of one provider, each with a gate of its own over the same State, together stay
within the provider's rate and see one breaker. What a gate keeps locally is a cache:

* A slice of tokens. One State round trip (`lease_tokens`) leases `slice_s` worth of the
  rate (at least one token) for `lease_s`; the gate spends it without asking again, and
  gives back what it did not use with its next lease (or at stop), or lets it expire. A
  slice is spent only until `lease_s` after it was asked for, so never after the State
  expired it: across all workers, admissions in any window stay within
  capacity + rate x window. When the bucket is empty the lease is a reservation: the
  gate sleeps until the State says the refill has paid for it, then spends it. Workers
  waiting on an empty bucket so queue up, one round trip per slice each.
* A view of the shared breaker: a reactor.circuit_breaker.CircuitBreaker restored from
  the State's last answer (`breaker`), with its open timeout moved onto this gate's clock.
  With a closed view at most `refresh_s` old the gate admits on its own; an older one is
  read again first. An open view sleeps until its timeout; a half-open one asks the State
  (`breaker_admit`), which admits one probe across all workers and leases it for
  `probe_lease_s`. Every failure is reported at once, and so is every probe's outcome and a
  success while the view counts failures; each answer refreshes the view.

Staleness bound: a worker starts a call under a closed view only while that view is less
than `refresh_s` old (or was read during this admission, right before the token is spent),
so after another worker's report opens the shared breaker, a worker starts calls for at
most `refresh_s` more (and none after its own report tells it); with `refresh_s = 0` every
admission reads the State. Half-open probes are exact: one at a time across all workers,
as long as a probe's call ends within `probe_lease_s`.

`admit` waits exactly as long as the State says: for a slice, or for an open breaker's
timeout. Deliveries are deferred, never dropped. One gate per worker; a worker's Provider
makes up to `max_in_flight` calls at once through it, so the gate is safe for concurrent
callers: admissions take turns (`_admitting`: one admission spends the slice, asks for the
next or waits at a time, so the bucket is spent exactly as by one caller), breaker round
trips take turns too (`_asking`: answers are taken as views in the order they were
asked), and the half-open probe belongs to one delivery (`_probe`): while it is out, every
other admission of this worker waits for its outcome, so half-open admits exactly one
call across all workers and all their concurrent attempts.

Redis away: a State call of the gate (a lease, a breaker read, admit or report) that meets
PortUnavailable is made again in place with backoff (reactor/until_available.py) until the State
answers: the attempt waits, is neither failed nor counted against the provider, and its worker
is not restarted (restarts escalate); deliveries resume when Redis is back. (`view`, the
operator's question, fails at once instead; giving back a slice or a probe stays bounded.)
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from protocol.channels import LANES, Lane
from protocol.messages import Delivery, Outcome, RetryLater
from reactor.circuit_breaker import BreakerConfig, BreakerSnapshot, BreakerState, CircuitBreaker
from reactor.ports import BreakerEvent, BreakerView, PortUnavailable, State
from reactor.until_available import until_available

log = logging.getLogger("herald.gate")

PROBE_POLL_S = 0.1  # how often a worker asks again while another worker's probe is out
GIVE_BACK_TIMEOUT_S = 1.0  # the longest a stopping or cancelled gate waits to give back what it holds


@dataclass(frozen=True)
class Limits:
    capacity: float
    refill_per_s: float
    breaker: BreakerConfig


@dataclass(frozen=True)
class GateSettings:
    """How a gate shares its provider's bucket and breaker through the State (actors/config.py: gate_*)."""

    # A slice is this many seconds of the rate: at least one token, at most a quarter of the burst (a slice held
    # counts against the bucket until it is spent and given back: N workers' slices should stay well below the burst).
    slice_s: float = 0.05
    lease_s: float = 1.0  # a slice is the worker's for this long; what it leaves unused goes back or expires
    refresh_s: float = 0.05  # the oldest view of the shared breaker a worker admits on; 0: ask the State every time
    probe_lease_s: float = 30.0  # a half-open probe's hold on the breaker: longer than any call takes

    def __post_init__(self) -> None:
        for name, low_ok in (("slice_s", True), ("lease_s", False), ("refresh_s", True), ("probe_lease_s", False)):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value >= 0 if low_ok else value > 0)):
                raise ValueError(f"gate {name} must be finite and {'not negative' if low_ok else 'positive'}, got {value!r}")

    def slice_tokens(self, limits: Limits) -> int:
        return max(1, min(math.floor(limits.capacity / 4), math.floor(limits.refill_per_s * self.slice_s)))


@dataclass
class Slice:
    lease_id: str
    tokens: int  # not yet spent
    valid_from: float  # this gate's clock: a reservation's wait after the answer came (now, for a plain lease)
    valid_until: float  # this gate's clock: wait + lease_s after the lease was asked for


@dataclass(frozen=True)
class GateView:
    """What /v1/admin/circuits shows of a gate (with the Provider's own counts)."""

    state: str
    consecutive_failures: int
    opened: int
    rejected: int
    tokens: float  # free in the shared bucket, plus this worker's unspent slice
    bucket_capacity: float
    refill_per_s: float
    deferred: int
    throttled: int
    transitions: dict[str, int]
    retry_in_s: float | None  # open: seconds until a probe may go out


class ResilienceGate:
    def __init__(
        self, channel: str, limits: Limits, state: State, settings: GateSettings | None = None, owner: str | None = None,
        critical_reserve: int = 0,
    ) -> None:
        if critical_reserve < 0 or (critical_reserve and critical_reserve + 1 > limits.capacity):
            raise ValueError(f"critical_reserve must be from 0 to the bucket capacity - 1 ({limits.capacity} - 1): bulk needs a whole "
                             f"token above it, got {critical_reserve!r}")
        self.channel = channel
        self.critical_reserve = critical_reserve  # tokens the bulk lane leaves in the shared bucket for the critical lane
        self.limits = limits
        self.state = state
        self.settings = settings or GateSettings()
        self.owner = owner or f"{channel}:{secrets.token_hex(8)}"  # this worker, as the shared breaker knows it
        self.bucket_key = f"gate:{channel}:bucket"
        self.breaker_key = f"gate:{channel}:breaker"
        self.slice_tokens = self.settings.slice_tokens(limits)
        self.breaker = CircuitBreaker(limits.breaker)  # the view of the shared breaker, on this gate's clock
        self._viewed_at = -math.inf  # when the view was asked for (this gate's clock); stale at first
        self._slices: dict[Lane, Slice | None] = dict.fromkeys(LANES)  # one slice per lane: bulk never spends critical's
        self._probe: Delivery | None = None  # the delivery holding the shared breaker's half-open probe, from this worker
        self._probe_settled = trio.Event()  # set (and replaced) when this worker's probe ends
        # one admission per lane at a time: a lane's slice and the breaker view are spent in turn (a bulk admission
        # waiting for the bucket never holds up a critical one)
        self._admitting = {lane: trio.Lock() for lane in LANES}
        self._asking = trio.Lock()  # one breaker round trip at a time: views are taken in the order they were asked
        self.deferred = 0  # deliveries that waited for an open breaker (or another's probe): in their turn, or for it
        self.throttled = 0  # deliveries that waited for a token (or a throttled verdict's pause): in their turn, or for it
        # What the admission in turn of each lane waits for now ("breaker", "bucket" or ""), and the waits that began
        # so far: a delivery waiting for its turn meanwhile waited for the same thing, and is counted as deferred too.
        self._waiting_on: dict[Lane, str] = dict.fromkeys(LANES, "")
        self._waits = {"breaker": 0, "bucket": 0}
        self._counted: dict[Lane, frozenset[str]] = dict.fromkeys(LANES, frozenset())  # the one in turn: counted for these
        self.transitions: dict[str, int] = {}  # the shared breaker's transitions this worker's steps took
        self.admitted = 0
        self.lease_round_trips = 0  # lease_tokens calls made: one per slice (given at once or reserved)
        self.breaker_round_trips = 0  # breaker_* calls made
        self._paused_until = -math.inf  # this gate's clock: a throttled verdict's wait; nothing is admitted before it
        self.throttles = 0  # throttled verdicts honoured (the provider's 429s)
        self.state_waits = 0  # State calls made again because the State could not be reached (Redis away)

    def _waited(self, exc: PortUnavailable) -> None:
        self.state_waits += 1

    @property
    def _what(self) -> str:
        return f"the {self.channel} gate"

    # -- the Provider's side ------------------------------------------------------------

    @property
    def _slice(self) -> Slice | None:
        """The bulk lane's slice (every delivery of priority normal or low)."""
        return self._slices[Lane.BULK]

    @property
    def probe_out(self) -> bool:
        """Whether a delivery this worker admitted holds the breaker's half-open probe (nothing else is admitted till it ends)."""
        return self._probe is not None

    async def admit(self, delivery: Delivery) -> None:
        await self._admit_in_turn(delivery, None)

    async def admit_or_pass(self, delivery: Delivery, max_pause_s: float) -> bool:
        """Admit as `admit` does, or answer False at once where it would wait for the breaker (open, or another probe
        out) or for a throttled verdict's pause longer than `max_pause_s`: failover sends through the next provider.
        Waits for the bucket's tokens as `admit` does (the provider's rate, not a reason to leave it)."""
        return await self._admit_in_turn(delivery, max_pause_s)

    async def _admit_in_turn(self, delivery: Delivery, max_pause_s: float | None) -> bool:
        lane = delivery.priority.lane
        admitting = self._admitting[lane]
        counted: frozenset[str] = frozenset()
        try:  # a free turn is taken without yielding to the event loop (a turn of the scheduler per delivery)
            admitting.acquire_nowait()
        except trio.WouldBlock:
            # deferred while it waits for its turn: behind an admission that waits for the breaker or the bucket (counted
            # at once when that one waits now, else once its turn comes, if one did meanwhile)
            now_on, before = self._waiting_on[lane], dict(self._waits)
            self._count_deferral(now_on)
            await admitting.acquire()
            later = {cause for cause, n in self._waits.items() if n != before[cause]} - {now_on}
            for cause in sorted(later):
                self._count_deferral(cause)
            counted = frozenset({now_on, *later} - {""})
        self._counted[lane] = counted  # its own waits in its turn are not counted again
        try:
            if max_pause_s is None:  # `_admit(delivery)` as before (tests/reactor/test_properties_catch_bugs.py's mutants override it)
                await self._admit(delivery)
                return True
            return await self._admit(delivery, max_pause_s)
        finally:
            self._counted[lane] = frozenset()
            admitting.release()

    async def _admit(self, delivery: Delivery, max_pause_s: float | None = None) -> bool:
        """True once admitted; False (with max_pause_s set) where it would wait for the breaker or a long pause."""
        passing = max_pause_s is not None
        lane = delivery.priority.lane
        deferred = throttled = False
        fresh = False  # the view was read during this admission, since its last wait
        probing = False  # this admission holds the shared breaker's half-open probe
        try:
            while True:
                if self._probe is not None:  # this worker's probe is out: nothing else goes until it ends
                    if passing:
                        return False
                    deferred = self._defer(deferred, delivery, BreakerState.HALF_OPEN)
                    with self._waiting(lane, "breaker"):
                        await self._probe_settled.wait()
                    fresh = False
                    continue
                now = trio.current_time()
                if not probing and now < self._paused_until:  # the provider said it is over its rate: wait as it asked
                    if max_pause_s is not None and self._paused_until - now > max_pause_s:
                        return False
                    throttled = True
                    with self._waiting(lane, "bucket"):
                        await trio.sleep(self._paused_until - now)
                    fresh = False
                    continue
                if not probing and self.breaker.state_at(now) is BreakerState.OPEN:
                    if passing:
                        return False
                    deferred = self._defer(deferred, delivery, BreakerState.OPEN)
                    with self._waiting(lane, "breaker"):
                        await trio.sleep(self.breaker.time_until_allowed(now))
                    fresh = False
                    continue
                if not self._slice_usable(now, lane):
                    held = self._slices[lane]
                    if held is not None and held.tokens > 0 and now < held.valid_from:  # reserved: wait for it
                        throttled = True
                        with self._waiting(lane, "bucket"):
                            await trio.sleep(held.valid_from - now)
                        fresh = False
                        continue
                    wait = await self._lease_slice(lane)
                    if wait > 0:  # nothing granted: bulk at the reserve (ask again then), or a capacity below one token
                        throttled = True
                        with self._waiting(lane, "bucket"):
                            await trio.sleep(wait)
                    continue
                if not probing:
                    state = self.breaker.state_at(now)
                    if state is BreakerState.CLOSED and not fresh and now - self._viewed_at >= self.settings.refresh_s:
                        await self._read_breaker()  # right before spending: the view is as fresh as it gets
                        fresh = True
                        continue
                    if state is BreakerState.HALF_OPEN:
                        view = await self._ask_breaker()
                        fresh = True
                        if not view.allowed:
                            if passing:
                                return False
                            deferred = self._defer(deferred, delivery, BreakerState(view.state))
                            if view.state == BreakerState.HALF_OPEN.value:  # another worker's probe is out
                                with self._waiting(lane, "breaker"):
                                    await trio.sleep(PROBE_POLL_S)
                                fresh = False
                        else:
                            probing = view.probe
                        continue  # look at the slice again: time passed
                spent = self._slices[lane]
                assert spent is not None
                spent.tokens -= 1
                self.admitted += 1
                self.throttled += throttled and "bucket" not in self._counted[lane]
                if probing:
                    self._probe = delivery
                return True
        except BaseException:
            if probing:  # cancelled (or failed) while holding the probe: free it for the others
                await self._release_probe()
            raise

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Retryable failures count against the provider; permanent ones are the input's fault; throttled ones neither."""
        probe = self._holds_probe(delivery)
        if isinstance(outcome, RetryLater) and (outcome.throttled or outcome.recipient):
            # its rate, or one recipient's failure (a webhook endpoint's), not the provider's health: no word to the breaker
            if probe:
                await self._release_probe()
            if outcome.throttled and outcome.after_s is not None and outcome.after_s > 0 and not outcome.recipient:
                await self._hold_bucket(outcome.after_s)  # one recipient's throttle holds no one else
            return
        try:
            failure = isinstance(outcome, RetryLater)
            # A success changes the shared breaker only if it was the probe or failures are being counted.
            if failure or probe or self.breaker.consecutive_failures > 0:
                await self._report("failure" if failure else "success", probe)
        finally:
            if probe:
                self._end_probe()

    async def _hold_bucket(self, after_s: float) -> None:
        """A throttled verdict's wait: this worker admits nothing for `after_s`; the shared bucket is emptied and put in
        debt by up to after_s of its refill (at most its capacity: leases never spent, the second a reservation), so the
        provider's other workers wait min(after_s, about capacity / refill) before they try, and each that is then
        throttled itself waits the whole after_s. The worker's own slices are dropped (they expire with their lease).
        Once per throttling: the answers of the other calls that were in flight when it began (up to max_in_flight of
        them, arriving over their latencies) come while this worker is paused; they may lengthen the pause but add no
        debt of their own, which stacked up to max_in_flight waits."""
        self.throttles += 1
        now = trio.current_time()
        paused = now < self._paused_until
        self._paused_until = max(self._paused_until, now + after_s)
        if paused:
            return
        self._slices = dict.fromkeys(LANES)
        limits = self.limits
        want = max(1, min(math.floor(limits.capacity), math.ceil(limits.refill_per_s * after_s)))
        for _ in range(2):  # the first takes what is free; if it was free (no wait), the second reserves: the debt
            lease = await until_available(lambda: self.state.lease_tokens(
                self.bucket_key, want, limits.capacity, limits.refill_per_s, self.settings.lease_s), self._what, self._waited)
            if lease.wait_s > 0 or lease.granted <= 0:
                break
        log.info("%s: throttled by the provider; admitting nothing for %.3g s", self.channel, after_s)

    async def abandon(self, delivery: Delivery) -> None:
        """A crash (poison message) or cancellation: no word on health; free a half-open probe."""
        if self._holds_probe(delivery):
            await self._release_probe()

    async def release(self) -> None:
        """The worker stops: give back its unspent slices (bounded, also when cancelled)."""
        slices, self._slices = self._slices, dict.fromkeys(LANES)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + GIVE_BACK_TIMEOUT_S):
            for held in slices.values():
                if held is None or held.tokens <= 0:
                    continue
                try:
                    await self.state.lease_tokens(
                        self.bucket_key, 0, self.limits.capacity, self.limits.refill_per_s, self.settings.lease_s,
                        (held.lease_id, held.tokens),
                    )
                except Exception:  # the lease expires by itself
                    log.warning("%s: could not give back %d tokens; they expire with their lease", self.channel, held.tokens,
                                exc_info=True)

    async def view(self) -> GateView:
        """The shared bucket and breaker as the State has them now, with this gate's counts."""
        limits = self.limits
        lease = await self.state.lease_tokens(self.bucket_key, 0, limits.capacity, limits.refill_per_s, self.settings.lease_s)
        breaker = await self.state.breaker_read(self.breaker_key, self.limits.breaker)
        now = trio.current_time()
        mine = sum(held.tokens for lane, held in self._slices.items() if held is not None and self._slice_usable(now, lane))
        return GateView(
            state=breaker.state,
            consecutive_failures=breaker.consecutive_failures,
            opened=breaker.opened,
            rejected=breaker.rejected,
            tokens=round(lease.free + mine, 3),
            bucket_capacity=self.limits.capacity,
            refill_per_s=self.limits.refill_per_s,
            deferred=self.deferred,
            throttled=self.throttled,
            transitions=dict(self.transitions),
            retry_in_s=breaker.retry_in_s if breaker.state == BreakerState.OPEN.value else None,
        )

    # -- the shared bucket ------------------------------------------------------------

    def _slice_usable(self, now: float, lane: Lane = Lane.BULK) -> bool:
        held = self._slices[lane]
        return held is not None and held.tokens > 0 and held.valid_from <= now < held.valid_until

    async def _lease_slice(self, lane: Lane = Lane.BULK) -> float:
        """Give back the lane's old slice and lease (or reserve) a new one in one round trip; 0 if granted, else the wait.

        The bulk lane asks with the gate's `critical_reserve`: it is granted only tokens above it (never a
        reservation) and told how long until there are some; the critical lane may take the last ones.
        """
        held, self._slices[lane] = self._slices[lane], None  # whatever happens next, the old slice is not spent any more
        asked_at = trio.current_time()
        self.lease_round_trips += 1
        lease = await until_available(lambda: self.state.lease_tokens(
            self.bucket_key, self.slice_tokens, self.limits.capacity, self.limits.refill_per_s, self.settings.lease_s,
            (held.lease_id, held.tokens) if held is not None else None,
            self.critical_reserve if lane is Lane.BULK else 0,
        ), self._what, self._waited)
        if lease.granted <= 0:
            return lease.wait_s
        answered_at = trio.current_time()
        valid_until = asked_at + lease.wait_s + self.settings.lease_s
        self._slices[lane] = Slice(lease.lease_id, lease.granted, answered_at + lease.wait_s, valid_until)
        return 0.0

    # -- the shared breaker -------------------------------------------------------------

    async def _read_breaker(self) -> None:
        async with self._asking:
            asked_at = trio.current_time()
            self.breaker_round_trips += 1
            view = await until_available(lambda: self.state.breaker_read(self.breaker_key, self.limits.breaker), self._what, self._waited)
            self._take_view(view, asked_at)

    async def _ask_breaker(self) -> BreakerView:
        async with self._asking:
            asked_at = trio.current_time()
            self.breaker_round_trips += 1
            view = await until_available(lambda: self.state.breaker_admit(
                self.breaker_key, self.limits.breaker, self.owner, self.settings.probe_lease_s), self._what, self._waited)
            self._take_view(view, asked_at)
            return view

    async def _report(self, event: BreakerEvent, probe: bool) -> None:
        async with self._asking:
            asked_at = trio.current_time()
            self.breaker_round_trips += 1
            view = await until_available(lambda: self.state.breaker_report(
                self.breaker_key, self.limits.breaker, self.owner, event, probe), self._what, self._waited)
            self._take_view(view, asked_at)

    async def _release_probe(self) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + GIVE_BACK_TIMEOUT_S):
            try:
                await self._report("release", probe=True)
            except Exception:  # the probe lease expires by itself
                log.warning("%s: could not release the probe; it frees itself after %s s", self.channel,
                            self.settings.probe_lease_s, exc_info=True)
            finally:
                self._end_probe()

    def _holds_probe(self, delivery: Delivery) -> bool:
        """Whether `delivery` is the call holding this worker's probe (a Provider never runs two equal deliveries at once)."""
        return self._probe is not None and (self._probe is delivery or self._probe == delivery)

    def _end_probe(self) -> None:
        """This worker's probe is over: the admissions waiting for it look at the (fresh) view again."""
        self._probe = None
        self._probe_settled.set()
        self._probe_settled = trio.Event()

    def _take_view(self, view: BreakerView, asked_at: float) -> None:
        received = trio.current_time()
        self.breaker = CircuitBreaker.restore(self.limits.breaker, BreakerSnapshot(
            state=BreakerState(view.state),
            failures=view.consecutive_failures,
            successes=view.consecutive_successes,
            probe_in_flight=view.probe_owner is not None,
            open_until=received + view.retry_in_s,  # never earlier than the State's deadline
            opened=view.opened,
            admitted=view.admitted,
            rejected=view.rejected,
            probes=view.probes,
            stale=view.stale_outcomes,
        ))
        self._viewed_at = asked_at  # the answer is at least this fresh
        for key in view.transitions:
            self.transitions[key] = self.transitions.get(key, 0) + 1
            log.log(logging.WARNING if key.endswith("->open") else logging.INFO, "%s: circuit %s", self.channel, key)

    def _count_deferral(self, cause: str) -> None:
        if cause == "breaker":
            self.deferred += 1
        elif cause == "bucket":
            self.throttled += 1

    @contextmanager
    def _waiting(self, lane: Lane, cause: str) -> Iterator[None]:
        """The admission in turn of `lane` waits for `cause`: the deliveries waiting for their turn meanwhile are deferred too."""
        self._waiting_on[lane] = cause
        self._waits[cause] += 1
        try:
            yield
        finally:
            self._waiting_on[lane] = ""

    def _defer(self, deferred: bool, delivery: Delivery, state: BreakerState) -> bool:
        if not deferred and "breaker" not in self._counted[delivery.priority.lane]:
            self.deferred += 1
            log.info("%s: breaker %s, deferring %s", self.channel, state.value, delivery.notification_id)
        return True
