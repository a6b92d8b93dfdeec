"""A token bucket as a pure state machine: it is told the time, it never reads a clock.

The owner (the Provider actor, or the embedded State's `take_tokens`) passes `now` from its own
clock. Three promises, each covered by the property tests:

* `0 <= tokens <= capacity`, always: refill is capped, a take never overdraws.
* Time that goes backwards adds nothing: the bucket refills only for time past the latest
  `now` it has seen, so a clock that jumps back cannot mint tokens.
* `time_until(n, now)` is exact enough to wait on: when it returns a finite `d`,
  `try_take(n, now + d)` succeeds (no other take in between). The owner sleeps once for
  `d` instead of polling. Floating-point rounding could otherwise make the bucket come up
  an ulp short at the deadline, so the answer is nudged up until the bucket's own refill
  arithmetic, evaluated at `now + d`, agrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenBucketStatistics:
    capacity: float
    refill_per_s: float
    tokens: float  # as of `updated`; call `available(now)` for the level at a later time
    updated: float
    admitted: int  # successful try_take calls
    rejected: int  # try_take calls refused for want of tokens
    tokens_taken: float


def _check_amount(n: float) -> None:
    if not n > 0 or math.isinf(n):
        raise ValueError(f"token amount must be positive and finite, got {n!r}")


def _check_time(now: float) -> None:
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time, got {now!r}")


@dataclass
class TokenBucket:
    capacity: float
    refill_per_s: float
    tokens: float = -1.0  # negative: start full
    updated: float = 0.0
    admitted: int = field(default=0, init=False, compare=False)
    rejected: int = field(default=0, init=False, compare=False)
    tokens_taken: float = field(default=0.0, init=False, compare=False)

    def __post_init__(self) -> None:
        if not (0 < self.capacity < math.inf and 0 < self.refill_per_s < math.inf):
            raise ValueError("capacity and refill rate must be positive and finite")
        _check_time(self.updated)
        if self.tokens < 0:
            self.tokens = self.capacity
        elif not self.tokens <= self.capacity:
            raise ValueError(f"tokens ({self.tokens!r}) exceed the capacity ({self.capacity!r})")

    def _level(self, at: float) -> float:
        """Tokens there would be at `at`, without changing anything.

        `_refill`, `available` and `time_until` all go through this one expression, so
        what `time_until` promises is computed exactly the way `try_take` will check it.
        """
        if at > self.updated:
            return min(self.capacity, self.tokens + (at - self.updated) * self.refill_per_s)
        return self.tokens

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = self._level(now)
            self.updated = now

    def available(self, now: float) -> float:
        """Tokens available at `now` (a query: the bucket is not changed)."""
        _check_time(now)
        return self._level(now)

    def try_take(self, n: float, now: float) -> bool:
        """Take n tokens if there are enough at `now`; never waits, never overdraws."""
        _check_amount(n)
        _check_time(now)
        self._refill(now)
        if n <= self.tokens:
            self.tokens = max(0.0, self.tokens - n)
            self.admitted += 1
            self.tokens_taken += n
            return True
        self.rejected += 1
        return False

    def time_until(self, n: float, now: float) -> float:
        """Seconds from `now` until n tokens are there: 0 if they are there now, inf if n exceeds the capacity.

        A query: the bucket is not changed. If no other take happens in between,
        `try_take(n, now + time_until(n, now))` succeeds.
        """
        _check_amount(n)
        _check_time(now)
        if n > self.capacity:
            return math.inf
        if self._level(now) >= n:
            return 0.0
        # Exact answer in real arithmetic, measured from the last refill (which may lie
        # after `now` if the caller's clock went backwards).
        wait = max(0.0, self.updated + (n - self.tokens) / self.refill_per_s - now)
        # Round up until the bucket's own arithmetic agrees at `now + wait`. The level is
        # monotone in time and reaches the capacity (>= n), so this ends; in practice after
        # zero or one step.
        step = math.ulp(abs(now) + wait)
        while self._level(now + wait) < n:
            wait += step
            step *= 2
        return wait

    def statistics(self) -> TokenBucketStatistics:
        return TokenBucketStatistics(
            capacity=self.capacity,
            refill_per_s=self.refill_per_s,
            tokens=self.tokens,
            updated=self.updated,
            admitted=self.admitted,
            rejected=self.rejected,
            tokens_taken=self.tokens_taken,
        )
