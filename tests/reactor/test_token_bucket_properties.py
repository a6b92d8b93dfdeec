"""TokenBucket against an exact reference model, plus the seed's configurations.

The model is written differently from the implementation: it works in exact Fractions
and re-derives the level from scratch, and the rate limit itself is checked directly on
the history of admitted takes (every window [t_i, t_j] admits at most
capacity + rate * (t_j - t_i)). The implementation class is the class attribute
`bucket_class`, so test_properties_catch_bugs.py can run this same machine against
deliberately broken buckets.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Callable, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reactor.circuit_breaker import CHANNEL_DEFAULTS
from reactor.token_bucket import TokenBucket

CAPACITIES = st.sampled_from([1.0, 3.0, 10.0, 100.0, 1000.0, 3000.0, 2.5]) | st.floats(0.5, 5000.0)
RATES = st.sampled_from([1000.0 / 60.0, 16.67, 100.0, 3000.0, 0.1, 2.0, 0.3]) | st.floats(0.01, 5000.0)
STEPS = (
    st.just(0.0)
    | st.floats(0.0, 1e-3)  # within one token's refill at high rates
    | st.floats(0.0, 5.0)
    | st.floats(0.0, 1e4)  # long idle: refill must stop at capacity
)

MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def relative_eps(capacity: float) -> Fraction:
    """Slack for float rounding in the implementation: far below one token, far above drift."""
    return Fraction(1e-9) * max(1, Fraction(capacity))


class TokenBucketMachine(RuleBasedStateMachine):
    bucket_class: ClassVar[type[TokenBucket]] = TokenBucket

    @initialize(
        capacity=CAPACITIES,
        rate=RATES,
        start=st.floats(0.0, 1e5) | st.just(0.0),
        initial=st.sampled_from(["full", "empty", "half"]),
    )
    def setup(self, capacity: float, rate: float, start: float, initial: str) -> None:
        tokens = {"full": -1.0, "empty": 0.0, "half": capacity / 2}[initial]
        self.bucket = self.bucket_class(capacity, rate, tokens=tokens, updated=start)
        self.capacity = Fraction(capacity)
        self.rate = Fraction(rate)
        self.eps = relative_eps(capacity)
        self.now = start  # what the caller's clock says (it may go backwards)
        # The reference model: exact level at the latest time seen, and that time.
        self.model_tokens = self.capacity if initial == "full" else Fraction(tokens)
        self.model_time = Fraction(start)
        self.admitted: list[tuple[Fraction, Fraction]] = []  # (effective time, n) of every admitted take

    # -- the model ---------------------------------------------------------------------

    def effective(self, now: float) -> Fraction:
        """A clock that went backwards counts as standing still at the latest time seen."""
        return max(self.model_time, Fraction(now))

    def model_level(self, now: float) -> Fraction:
        t = self.effective(now)
        return min(self.capacity, self.model_tokens + (t - self.model_time) * self.rate)

    def model_advance(self, now: float) -> None:
        self.model_tokens = self.model_level(now)
        self.model_time = self.effective(now)

    def amounts(self) -> st.SearchStrategy[float]:
        cap = float(self.capacity)
        return st.sampled_from([1.0, cap, cap / 3]) | st.floats(1e-3, cap * 1.2) | st.integers(1, max(1, int(cap) + 2)).map(float)

    def take_and_check(self, n: float) -> bool:
        level = self.model_level(self.now)
        before = self.bucket.tokens
        took = self.bucket.try_take(n, self.now)
        self.model_advance(self.now)
        if took:
            assert level >= Fraction(n) - self.eps, f"admitted {n} with only {float(level)} tokens"
            self.model_tokens -= Fraction(n)
            self.admitted.append((self.model_time, Fraction(n)))
        else:
            assert level < Fraction(n) + self.eps, f"refused {n} with {float(level)} tokens"
        if Fraction(self.now) < self.model_time:
            # The clock went backwards: no refill may happen, whatever the outcome.
            assert self.bucket.tokens <= before
        return took

    # -- rules -------------------------------------------------------------------------

    @rule(dt=STEPS)
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(dt=st.floats(0.0, 100.0))
    def clock_goes_backwards(self, dt: float) -> None:
        self.now -= dt

    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        self.take_and_check(data.draw(self.amounts(), label="n"))

    @rule(data=st.data())
    def ask_time_until(self, data: st.DataObject) -> None:
        n = data.draw(self.amounts(), label="n")
        wait = self.bucket.time_until(n, self.now)
        if Fraction(n) > self.capacity:
            assert wait == math.inf
            return
        assert 0 <= wait < math.inf
        # The promise the actor relies on: wait exactly `wait`, then the take succeeds.
        probe = copy.deepcopy(self.bucket)
        assert probe.try_take(n, self.now + wait), f"time_until({n}) = {wait} is too short"
        # ... and it is not much longer than needed.
        level = self.model_level(self.now)
        needed = max(Fraction(0), self.effective(self.now) - Fraction(self.now) + (Fraction(n) - level) / self.rate)
        assert Fraction(wait) <= needed + self.eps / self.rate + Fraction(1e-9) * max(1, abs(Fraction(self.now))), (
            f"time_until({n}) = {wait}, but {float(needed)} suffices"
        )

    @rule(data=st.data())
    def wait_then_take(self, data: st.DataObject) -> None:
        """What the Provider does: ask how long, sleep exactly that long, take."""
        n = data.draw(self.amounts(), label="n")
        wait = self.bucket.time_until(n, self.now)
        if wait == math.inf:
            return
        self.now += wait
        assert self.take_and_check(n), f"take of {n} refused after waiting time_until = {wait}"

    @rule()
    def drain(self) -> None:
        """Take everything there is: the take succeeds and leaves the bucket empty."""
        level = self.bucket.available(self.now)
        if level > 0:
            assert self.take_and_check(level), f"refused all {level} available tokens"
            assert self.bucket.available(self.now) == 0

    @rule(fraction=st.floats(0.01, 0.99))
    def take_just_more_than_there_is(self, fraction: float) -> None:
        """Ask for a little more than the bucket holds: it must refuse (no credit, however small)."""
        level = self.bucket.available(self.now)
        n = level + fraction
        if n <= self.capacity:
            assert not self.take_and_check(n), f"admitted {n} with only {level} tokens"

    # -- invariants --------------------------------------------------------------------

    @precondition(lambda self: hasattr(self, "bucket"))
    @invariant()
    def tokens_within_bounds(self) -> None:
        assert 0 <= self.bucket.tokens <= self.bucket.capacity, self.bucket.tokens
        level = self.bucket.available(self.now)
        assert 0 <= level <= self.bucket.capacity, level

    @precondition(lambda self: hasattr(self, "bucket"))
    @invariant()
    def agrees_with_model(self) -> None:
        level = Fraction(self.bucket.available(self.now))
        assert abs(level - self.model_level(self.now)) <= self.eps, (float(level), float(self.model_level(self.now)))

    @precondition(lambda self: hasattr(self, "bucket"))
    @invariant()
    def every_window_respects_the_rate(self) -> None:
        # Only windows ending at the newest take can be new; earlier ones were checked before.
        if not self.admitted:
            return
        t_j = self.admitted[-1][0]
        total = Fraction(0)
        for t_i, n in reversed(self.admitted):
            total += n
            assert total <= self.capacity + self.rate * (t_j - t_i) + self.eps * len(self.admitted), (
                f"{float(total)} tokens admitted in [{float(t_i)}, {float(t_j)}]"
            )

    @precondition(lambda self: hasattr(self, "bucket"))
    @invariant()
    def statistics_add_up(self) -> None:
        stats = self.bucket.statistics()
        assert stats.admitted == len(self.admitted)
        assert stats.tokens == self.bucket.tokens


TokenBucketMachine.TestCase.settings = MACHINE_SETTINGS
TestTokenBucketMachine = TokenBucketMachine.TestCase


# -- examples: the seed's configurations ------------------------------------------------


def bucket_for(channel: str, now: float = 0.0) -> TokenBucket:
    capacity, rate, _ = CHANNEL_DEFAULTS[channel]
    return TokenBucket(capacity, rate, updated=now)


def drain(bucket: TokenBucket, now: float) -> int:
    taken = 0
    while bucket.try_take(1, now):
        taken += 1
    return taken


def test_sms_100_at_once_then_one_every_10_ms() -> None:
    bucket = bucket_for("sms")
    assert drain(bucket, 0.0) == 100
    assert bucket.time_until(1, 0.0) == pytest.approx(0.01)
    now = 0.0
    for _ in range(500):  # five seconds of steady sending at exactly the advertised pace
        wait = bucket.time_until(1, now)
        assert wait == pytest.approx(0.01, rel=1e-6) or wait == 0.0
        now += wait
        assert bucket.try_take(1, now)
    assert now == pytest.approx(5.0, rel=1e-6)
    assert not bucket.try_take(1, now)


def test_email_1000_burst_then_1000_a_minute() -> None:
    bucket = bucket_for("email")
    assert bucket.capacity == 1000 and bucket.refill_per_s == pytest.approx(16.67, abs=0.01)
    assert drain(bucket, 0.0) == 1000
    assert bucket.time_until(1, 0.0) == pytest.approx(0.06)
    assert drain(bucket, 60.0) == 1000  # a minute refills the whole burst
    assert drain(bucket, 90.0) == 500
    assert bucket.time_until(1000, 90.0) == pytest.approx(60.0)


def test_push_3000_burst_and_3000_a_second() -> None:
    bucket = bucket_for("push")
    assert drain(bucket, 0.0) == 3000
    assert drain(bucket, 0.5) == 1500
    assert bucket.time_until(3000, 0.5) == pytest.approx(1.0)
    assert bucket.time_until(3001, 0.5) == math.inf


def test_web_is_generous() -> None:
    capacity, rate, _ = CHANNEL_DEFAULTS["web"]
    assert capacity >= 10000 and rate >= 10000


def test_idle_bucket_stops_at_capacity() -> None:
    bucket = TokenBucket(10, 2, tokens=0, updated=0)
    assert bucket.available(1e9) == 10
    assert drain(bucket, 1e9) == 10


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(10, 1, updated=100)
    assert drain(bucket, 100) == 10
    assert not bucket.try_take(1, 50)
    assert bucket.available(50) == 0
    assert bucket.time_until(1, 50) == pytest.approx(51)  # back to 100, then one second
    assert bucket.try_take(1, 101)


@pytest.mark.parametrize("n", [0, -1, -0.5, math.nan, math.inf])
def test_bad_amounts_are_refused(n: float) -> None:
    bucket = TokenBucket(10, 1)
    with pytest.raises(ValueError):
        bucket.try_take(n, 0)
    with pytest.raises(ValueError):
        bucket.time_until(n, 0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(capacity=0, refill_per_s=1), dict(capacity=1, refill_per_s=0), dict(capacity=math.inf, refill_per_s=1), dict(capacity=5, refill_per_s=1, tokens=6)],
)
def test_bad_configuration_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TokenBucket(**kwargs)


def test_query_does_not_change_the_bucket() -> None:
    bucket = TokenBucket(10, 1, tokens=0, updated=0)
    before = copy.deepcopy(bucket)
    bucket.time_until(5, 3.0)
    bucket.available(3.0)
    assert bucket == before


def time_until_suffices(bucket_class: type[TokenBucket], **overrides: object) -> Callable[[], None]:
    """The one-shot form of the machine's time_until rule, aimed at awkward floats and clocks gone backwards."""

    @given(
        capacity=st.floats(0.5, 1e4),
        rate=st.floats(1e-3, 1e5),
        tokens_fraction=st.floats(0, 1),
        updated=st.floats(-1e9, 1e9),
        now_offset=st.floats(-10, 10) | st.floats(-1e-6, 1e-6),
        n_fraction=st.floats(1e-6, 1),
    )
    @settings(settings(max_examples=500, deadline=None), **overrides)  # type: ignore[arg-type]
    def check(capacity: float, rate: float, tokens_fraction: float, updated: float, now_offset: float, n_fraction: float) -> None:
        bucket = bucket_class(capacity, rate, tokens=capacity * tokens_fraction, updated=updated)
        n = capacity * n_fraction
        now = updated + now_offset
        wait = bucket.time_until(n, now)
        assert 0 <= wait < math.inf
        assert bucket.try_take(n, now + wait), (wait, bucket)

    return check


def test_time_until_is_never_an_ulp_short() -> None:
    time_until_suffices(TokenBucket)()
