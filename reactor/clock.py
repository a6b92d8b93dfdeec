"""Time, read from Trio's clock so that everything runs under MockClock.

Durations and deadlines use `trio.current_time()`. Wall-clock timestamps (ids, logs)
come from `wall_ms()`: one anchor taken from the OS the first time it is needed in a
run, advanced by Trio's clock after that; under MockClock, wall time jumps with it.
"""

from __future__ import annotations

import datetime as dt
import time

import trio

_anchor: dict[object, float] = {}


def wall_s() -> float:
    """Seconds since the epoch, moving with Trio's clock."""
    clock = trio.lowlevel.current_clock()
    offset = _anchor.get(clock)
    if offset is None:
        # The one read of the OS wall clock: it anchors the run's timeline.
        offset = _anchor[clock] = time.time_ns() / 1e9 - trio.current_time()
    return offset + trio.current_time()


def wall_ms() -> int:
    return int(wall_s() * 1000)


def iso(ms: int) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> int:
    """Milliseconds since the epoch from an RFC 3339 timestamp (naive means UTC)."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)
