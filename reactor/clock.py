"""Time: durations on Trio's clock, timestamps from a wall clock chosen per Trio run.

Durations and deadlines use `trio.current_time()`, so everything runs under MockClock.
Wall-clock timestamps (ids, logs, due times, token expiry) come from `wall_ms()`, which
asks the run's `WallClock`:

- `OsWallClock` (production): reads the OS wall clock at every call (`time.time_ns()`,
  about 50 ns), so it follows NTP slews and steps and a suspend, and never drifts from
  what the OS says over a long run.
- `TrioWallClock` (under MockClock): one OS reading anchors it, then it moves with Trio's
  clock, so a test that sleeps an hour of mock time sees an hour of wall time go by.

The choice is made once per Trio run (a RunVar: nothing leaks from one run to the next):
`TrioWallClock` when the run's clock is a MockClock, `OsWallClock` otherwise, unless the
composition root or a test installed another one first (`use_wall_clock`). The OS wall
clock can go backwards (an NTP step): what needs an order keeps its own (the Ingress's
IdGenerator never lets a notification id's time go back; TokenExpiry re-checks).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Protocol

import trio
from trio.lowlevel import RunVar
from trio.testing import MockClock


class WallClock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since the Unix epoch."""


class OsWallClock:
    """The OS wall clock, read at every call (`read_ns`: time.time_ns, or a fake in tests)."""

    def __init__(self, read_ns: Callable[[], int] | None = None) -> None:
        self._read_ns = read_ns

    def now_ns(self) -> int:
        return time.time_ns() if self._read_ns is None else self._read_ns()


class TrioWallClock:
    """Wall time moving with Trio's clock: the OS reading at first use, advanced by Trio's clock since (for MockClock)."""

    def __init__(self) -> None:
        self._offset_ns: int | None = None

    def now_ns(self) -> int:
        now = int(trio.current_time() * 1e9)
        if self._offset_ns is None:
            self._offset_ns = time.time_ns() - now
        return self._offset_ns + now


_run_wall_clock: RunVar[WallClock] = RunVar("herald_wall_clock")


def wall_clock() -> WallClock:
    """This Trio run's wall clock (chosen at first use, see the module's docstring)."""
    try:
        return _run_wall_clock.get()
    except LookupError:
        chosen: WallClock = TrioWallClock() if isinstance(trio.lowlevel.current_clock(), MockClock) else OsWallClock()
        _run_wall_clock.set(chosen)
        return chosen


def use_wall_clock(clock: WallClock) -> None:
    """Make `clock` this Trio run's wall clock from now on (a composition root, a test)."""
    _run_wall_clock.set(clock)


def wall_s() -> float:
    """Seconds since the epoch, from the run's wall clock."""
    return wall_clock().now_ns() / 1e9


def wall_ms() -> int:
    """Milliseconds since the epoch, from the run's wall clock."""
    return wall_clock().now_ns() // 1_000_000


def iso(ms: int) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> int:
    """Milliseconds since the epoch from an RFC 3339 timestamp (naive means UTC)."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)
