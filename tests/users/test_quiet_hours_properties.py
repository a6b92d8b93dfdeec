"""Quiet hours: the window math against an independent reference, across DST gaps and overlaps.

The implementation (actors.domain.preferences.quiet_until) resolves wall-clock times with PEP 495
folds and a binary search over a gap. The reference below knows nothing of folds: it walks
the timeline minute by minute, keeps the high-water mark of the user's wall clock, and
opens or closes the window when that mark first reaches a day's start or end, in wall
order (so a gap that jumps over both fires both). Every offset and transition since 1972
falls on a whole minute, and so do the windows, so the state is constant within a minute.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.preferences import clock_minutes, first_instant_at, quiet_until

MINUTE = 60_000
HOUR = 3_600_000
ZONES = [
    "UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe",  # Lord Howe: a 30-minute DST shift
    "Pacific/Apia",  # skipped 30 December 2011 entirely
    "America/Sao_Paulo",  # DST began at midnight (until 2019): the day started at 01:00
    "Antarctica/Troll",  # a 2-hour DST shift
    "Asia/Kolkata", "Pacific/Chatham", "America/Santiago", "Africa/Casablanca", "Asia/Tehran", "America/St_Johns",
    "Australia/Adelaide", "America/Havana",  # Havana: DST changes at midnight
]
YEARS = (2011, 2016, 2018, 2024, 2031)
LOW_MS = 946_684_800_000  # 2000-01-01
HIGH_MS = 2_145_916_800_000  # 2038-01-01
INTERESTING_MINUTES = [0, 1, 30, 59, 60, 90, 120, 150, 180, 210, 1380, 1410, 1439]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def wall(ms: int, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms // 1000, zone).replace(tzinfo=None)


@cache
def transitions(key: str) -> tuple[int, ...]:
    """UTC ms of every offset change of the zone in YEARS, to the minute (found by scanning, then bisecting)."""
    zone = ZoneInfo(key)
    found = []
    for year in YEARS:
        t = int(dt.datetime(year, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
        stop = int(dt.datetime(year + 1, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
        step = 3 * HOUR
        offset = dt.datetime.fromtimestamp(t // 1000, zone).utcoffset()
        while t < stop:
            nxt = dt.datetime.fromtimestamp((t + step) // 1000, zone).utcoffset()
            if nxt != offset:
                lo, hi = t, t + step
                while hi - lo > MINUTE:
                    mid = (lo + hi) // 2 // MINUTE * MINUTE
                    if dt.datetime.fromtimestamp(mid // 1000, zone).utcoffset() == offset:
                        lo = mid
                    else:
                        hi = mid
                found.append(hi)
                offset = nxt
            t += step
    return tuple(found)


def in_wall_window(moment: dt.datetime, start: int, end: int) -> bool:
    minute = moment.hour * 60 + moment.minute
    return start <= minute < end if start < end else (minute >= start or minute < end)


def reference(now_ms: int, zone: ZoneInfo, start: int, end: int) -> int | None:
    """quiet_until by brute force: minute steps from 30 h before now, the wall clock's high-water mark."""
    t = now_ms - now_ms % MINUTE - 30 * HOUR
    high = wall(t, zone)
    quiet = False  # unknown until the first event; 30 h is ample for one
    quiet_now: bool | None = None
    while t <= now_ms + 52 * HOUR:
        t += MINUTE
        current = wall(t, zone)
        if current > high:
            events = []
            day = high.date() - dt.timedelta(days=1)
            while day <= current.date() + dt.timedelta(days=1):
                opens = dt.datetime.combine(day, dt.time(start // 60, start % 60))
                close_day = day + dt.timedelta(days=1) if end <= start else day
                closes = dt.datetime.combine(close_day, dt.time(end // 60, end % 60))
                if high < opens <= current:
                    events.append((opens, True))
                if high < closes <= current:
                    events.append((closes, False))
                day += dt.timedelta(days=1)
            for _, opening in sorted(events):
                quiet = opening
            high = current
        if quiet_now is None:
            if t > now_ms:
                raise AssertionError("unreachable")
            if t + MINUTE > now_ms:  # t is now's minute
                quiet_now = quiet
                if not quiet:
                    return None
        elif not quiet:
            return t
    raise AssertionError("the window did not end within 52 h")


@st.composite
def moments(draw: st.DrawFn) -> tuple[str, int]:
    key = draw(st.sampled_from(ZONES))
    near = transitions(key)
    if near and draw(st.booleans()):
        base = draw(st.sampled_from(near))
        return key, base + draw(st.integers(-26 * HOUR, 26 * HOUR))
    return key, draw(st.integers(LOW_MS, HIGH_MS))


clock = st.integers(0, 1439) | st.sampled_from(INTERESTING_MINUTES)


@settings(max_examples=300, deadline=None)
@given(moments(), clock, clock)
def test_quiet_until_matches_the_reference(moment: tuple[str, int], start: int, end: int) -> None:
    key, now = moment
    zone = ZoneInfo(key)
    result = quiet_until(now, zone, start, end)
    if start == end:
        assert result is None
        return
    assert result == reference(now, zone, start, end)
    if result is not None:
        assert now < result
        # Outside the window: the user's clock at that instant reads outside [start, end).
        assert not in_wall_window(wall(result, zone), start, end)
        # Within a day: the window is under 24 h on the wall clock, plus at most a 2 h DST shift
        # (a gap that swallows all the time between two windows joins them: only then longer).
        length = (end - start) % 1440
        assert result - now <= (length * MINUTE + 2 * HOUR if length <= 22 * 60 else 50 * HOUR)


@settings(max_examples=300, deadline=None)
@given(moments(), clock)
def test_first_instant_at_is_the_first(moment: tuple[str, int], minute: int) -> None:
    key, now = moment
    zone = ZoneInfo(key)
    target = dt.datetime.combine(wall(now, zone).date(), dt.time(minute // 60, minute % 60))
    instant = first_instant_at(target, zone)
    assert wall(instant, zone) >= target
    # A minute earlier the clock read earlier, and never reached `target` in the two days before.
    for back in range(MINUTE, 48 * HOUR, 15 * MINUTE):
        assert wall(instant - back, zone) < target


def utc_ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp() * 1000)


def local_ms(key: str, *args: int, fold: int = 0) -> int:
    return int(dt.datetime(*args, tzinfo=ZoneInfo(key), fold=fold).timestamp() * 1000)


def test_known_cases() -> None:
    paris, new_york = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")
    night = clock_minutes("22:00"), clock_minutes("07:00")
    # An ordinary night, crossing midnight: quiet at 23:00, until 07:00 the next morning.
    assert quiet_until(local_ms("Europe/Paris", 2024, 6, 10, 23), paris, *night) == local_ms("Europe/Paris", 2024, 6, 11, 7)
    assert quiet_until(local_ms("Europe/Paris", 2024, 6, 11, 6, 59), paris, *night) == local_ms("Europe/Paris", 2024, 6, 11, 7)
    assert quiet_until(local_ms("Europe/Paris", 2024, 6, 11, 7), paris, *night) is None
    assert quiet_until(local_ms("Europe/Paris", 2024, 6, 10, 12), paris, *night) is None
    # The night the clocks go forward in Paris (02:00 -> 03:00): 22:00 to 07:00 lasts 8 real hours.
    start = local_ms("Europe/Paris", 2024, 3, 30, 22)
    assert quiet_until(start, paris, *night) - start == 8 * HOUR
    # A window ending at 02:30 that night ends when the clock jumps: 01:00 UTC, 03:00 local.
    assert quiet_until(local_ms("Europe/Paris", 2024, 3, 31, 1, 30), paris, 60, 150) == utc_ms(2024, 3, 31, 1)
    # The night the clocks go back in New York (02:00 EDT -> 01:00 EST):
    # a window ending at 01:30 ends at the first 01:30 (EDT) ...
    assert quiet_until(local_ms("America/New_York", 2024, 11, 2, 23), new_york, 1320, 90) == utc_ms(2024, 11, 3, 5, 30)
    # ... and the repeated 01:00-01:30 (EST) that follows is not quiet again.
    assert quiet_until(local_ms("America/New_York", 2024, 11, 3, 1, 10, fold=1), new_york, 1320, 90) is None
    # A window 01:30-05:00 holds the repeated hour: it lasts 4.5 real hours, until 05:00 EST.
    assert quiet_until(local_ms("America/New_York", 2024, 11, 3, 1, 45), new_york, 90, 300) == utc_ms(2024, 11, 3, 10)
    assert quiet_until(local_ms("America/New_York", 2024, 11, 3, 1, 10, fold=1), new_york, 90, 300) == utc_ms(2024, 11, 3, 10)
    # Apia skipped 30 December 2011: a 22:00-07:00 window on the 29th ran into the one of the 31st.
    apia = ZoneInfo("Pacific/Apia")
    assert quiet_until(local_ms("Pacific/Apia", 2011, 12, 29, 23), apia, *night) == local_ms("Pacific/Apia", 2011, 12, 31, 7)
    assert quiet_until(0, dt.timezone.utc, 600, 600) is None  # start == end: no window
