"""A token bucket as a pure state machine: it is told the time, it never reads a clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    capacity: float
    refill_per_s: float
    tokens: float = -1.0  # -1: start full
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.refill_per_s <= 0:
            raise ValueError("capacity and refill rate must be positive")
        if self.tokens < 0:
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_s)
            self.updated = now

    def try_take(self, n: float, now: float) -> bool:
        """Take n tokens if there are enough at `now`."""
        self._refill(now)
        if n <= self.tokens:
            self.tokens -= n
            return True
        return False

    def time_until(self, n: float, now: float) -> float:
        """Seconds from `now` until n tokens are there (inf if n exceeds the capacity)."""
        self._refill(now)
        if n > self.capacity:
            return float("inf")
        return max(0.0, (n - self.tokens) / self.refill_per_s)
