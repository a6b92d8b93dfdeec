"""reactor.clock: production reads the OS wall clock at every call; under MockClock wall time moves with the mock clock.

The OS clock is faked by replacing time.time_ns (what an NTP step or a suspend looks
like to a process): wall_ms() must follow each jump, forwards and back. Notification ids
stay ordered when it goes back (the Ingress's IdGenerator).
"""

from __future__ import annotations

import time

import trio
import trio.testing

from actors.ingress import IdGenerator
from reactor.clock import OsWallClock, TrioWallClock, use_wall_clock, wall_clock, wall_ms

HOUR_NS = 3600 * 10**9


class JumpingOsClock:
    """time.time_ns as a test sets it: a fixed reading moved by hand."""

    def __init__(self) -> None:
        self.ns = time.time_ns() // 1_000_000 * 1_000_000  # a whole millisecond, so the steps below land exactly

    def __call__(self) -> int:
        return self.ns


async def test_wall_ms_follows_the_os_clock_when_it_jumps(monkeypatch):
    fake = JumpingOsClock()
    monkeypatch.setattr(time, "time_ns", fake)
    start = wall_ms()
    assert start == fake.ns // 1_000_000
    fake.ns += HOUR_NS  # a suspend, or an NTP step forwards
    assert wall_ms() == start + 3_600_000
    fake.ns -= 2 * HOUR_NS  # an NTP step backwards
    assert wall_ms() == start - 3_600_000
    fake.ns += 1_500_000  # and a small slew
    assert wall_ms() == start - 3_600_000 + 1


async def test_a_wall_clock_installed_for_a_run_is_the_one_read():
    fake = JumpingOsClock()
    use_wall_clock(OsWallClock(fake))
    assert wall_ms() == fake.ns // 1_000_000
    fake.ns += HOUR_NS
    assert wall_ms() == fake.ns // 1_000_000


def test_the_choice_is_per_run_and_does_not_leak():
    fake = JumpingOsClock()
    fake.ns = 10**18  # 2001-09-09: far from now

    async def installs() -> int:
        use_wall_clock(OsWallClock(fake))
        return wall_ms()

    async def reads() -> tuple[type, int]:
        return type(wall_clock()), wall_ms()

    assert trio.run(installs) == 10**12
    kind, now = trio.run(reads)  # a later run: the OS clock again, not the last run's fake
    assert kind is OsWallClock and abs(now - time.time_ns() // 1_000_000) < 60_000
    kind, _ = trio.run(reads, clock=trio.testing.MockClock())
    assert kind is TrioWallClock


async def test_under_mock_clock_wall_time_moves_with_the_mock_clock(mock_clock, monkeypatch):
    mock_clock.autojump_threshold = 0
    start = wall_ms()
    await trio.sleep(3600)
    assert wall_ms() - start == 3_600_000
    fake = JumpingOsClock()
    monkeypatch.setattr(time, "time_ns", fake)
    fake.ns += 5 * HOUR_NS  # the OS clock of the machine running the test does not matter under MockClock
    await trio.sleep(60)
    assert wall_ms() - start == 3_660_000


def test_notification_ids_stay_ordered_when_the_wall_clock_goes_back():
    ids = IdGenerator()
    readings = [1_700_000_000_000, 1_700_000_000_005, 1_699_999_000_000, 1_699_999_000_000, 1_700_000_000_006]
    made = [ids.next(ms) for ms in readings]
    assert made == sorted(made) and len(set(made)) == len(made)
