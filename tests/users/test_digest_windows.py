"""The digest windows' pure rules (actors/domain/digests.py), property-tested without a node or a clock.

`fire_all` replays a stream of events through the Store's model (`merge`, with each event's
`event_times`) and fires a window once its due time has come before the next event: what the
Store and the Digester do, with no I/O. The properties compare it with each kind's definition,
and a day of events across DST changes in two time zones with the user's clock.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.digests import (
    DAY_MS, HOUR_MS, LIMITS, MINUTE_MS, OpenWindow, check_window, choose_window, event_times, merge, parse_duration,
)
from protocol.digests import DigestSpec, Window
from protocol.preferences import Preferences, QuietHours
from reactor.clock import parse_iso

UTC = ZoneInfo("UTC")
NEW_YORK, PARIS = ZoneInfo("America/New_York"), ZoneInfo("Europe/Paris")


def fire_all(window: Window, times: list[int], zone: dt.tzinfo = UTC, prefs: Preferences | None = None,
             critical: frozenset[int] = frozenset(), max_events: int = 1000) -> list[tuple[int, list[int]]]:
    """(fire instant, the events it carries) of each window, in order, for events at these sorted instants."""
    fires: list[tuple[int, list[int]]] = []
    open_: OpenWindow | None = None
    carried: list[int] = []
    for i, at in enumerate(times):
        if open_ is not None and open_.due_ms <= at:  # due before this event (a tie: the claim came first)
            fires.append((open_.due_ms, carried))
            open_, carried = None, []
        due, deadline = event_times(window, at, zone, prefs, critical=i in critical)
        open_ = merge(open_, at, due, deadline, max_events)
        carried = [*carried, at]
    if open_ is not None:
        fires.append((open_.due_ms, carried))
    return fires


instants = st.lists(st.integers(0, 3 * DAY_MS), min_size=1, max_size=60).map(sorted)
quiet_ms = st.integers(10, 3600).map(lambda s: s * 1000)


@given(times=instants, quiet=quiet_ms, extra=st.integers(0, 6 * 3600))
@settings(max_examples=300)
def test_a_sliding_window_fires_after_its_quiet_time_or_at_its_maximum_wait(times, quiet, extra) -> None:
    most = quiet + extra * 1000
    window = Window("sliding", after_quiet=f"{quiet // 1000}s", max_wait=f"{most // 1000}s")
    fires = fire_all(window, times)
    assert [t for _, carried in fires for t in carried] == times  # every event in exactly one digest, in order
    for fire_at, carried in fires:
        first, last = carried[0], carried[-1]
        assert fire_at == min(last + quiet, first + most)
        assert all(b - a < quiet for a, b in zip(carried, carried[1:]))  # no quiet gap inside a window
    for (fire_at, _), (_, nxt) in zip(fires, fires[1:]):
        assert nxt[0] >= fire_at  # the next window opened by an event after this one fired


@given(times=instants, most=st.integers(1, 10))
def test_a_full_window_fires_at_its_last_events_instant(times, most) -> None:
    fires = fire_all(Window("daily", at="08:00"), times, max_events=most)
    assert [t for _, carried in fires for t in carried] == times
    for fire_at, carried in fires:
        assert len(carried) <= most
        if len(carried) == most:
            assert fire_at == min(carried[-1], fire_at)


@given(times=instants, every_min=st.integers(1, 7 * 24 * 60))
@settings(max_examples=300)
def test_a_fixed_window_fires_every_after_its_first_event_with_everything_before(times, every_min) -> None:
    every = every_min * MINUTE_MS
    fires = fire_all(Window("fixed", every=f"{every_min}m"), times)
    assert [t for _, carried in fires for t in carried] == times
    for fire_at, carried in fires:
        assert fire_at == carried[0] + every and carried[-1] < fire_at


@given(times=st.lists(st.integers(0, 3 * DAY_MS), min_size=1, max_size=60, unique=True).map(sorted), critical_at=st.integers(0, 59))
def test_a_critical_event_fires_its_window_at_once(times, critical_at) -> None:
    i = critical_at % len(times)
    fires = fire_all(Window("fixed", every="1h"), times, critical=frozenset({i}))
    [(fire_at, carried)] = [f for f in fires if times[i] in f[1]]
    assert fire_at == times[i] and carried[-1] == times[i], "it fires at the critical event's instant, with what came before"
    assert all(times[i] - t < HOUR_MS for t in carried)


def local(moment_ms: int, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(moment_ms / 1000, zone)


def day_of_events(start: str, hours: int = 48, every_min: int = 17) -> list[int]:
    t0 = parse_iso(start)
    return [t0 + i * every_min * MINUTE_MS for i in range(hours * 60 // every_min)]


def test_a_day_of_events_across_dst_changes_fires_at_eight_on_the_users_clock_in_two_zones() -> None:
    """New York springs forward on 8 March 2026 and falls back on 1 November; Paris on 29 March and 25 October.
    Two days of events (one every 17 minutes) around each change: each digest fires when the user's clock shows
    08:00, carrying every event since the previous one, in both zones."""
    daily = Window("daily", at="08:00")
    for zone, start in ((NEW_YORK, "2026-03-07T00:00:00Z"), (NEW_YORK, "2026-10-31T00:00:00Z"),
                        (PARIS, "2026-03-28T00:00:00Z"), (PARIS, "2026-10-24T00:00:00Z")):
        times = day_of_events(start)
        fires = fire_all(daily, times, zone)
        assert [t for _, carried in fires for t in carried] == times
        offsets = set()
        for fire_at, carried in fires:
            shown = local(fire_at, zone)
            assert (shown.hour, shown.minute, shown.second) == (8, 0, 0), (zone, shown)
            assert carried[-1] < fire_at and fire_at - carried[0] <= DAY_MS + HOUR_MS
            offsets.add(shown.utcoffset())
        assert len(fires) == 3 and len(offsets) == 2, (zone, start, offsets)  # the change falls between two of them


def test_a_daily_window_inside_quiet_hours_fires_when_they_end_on_the_users_clock() -> None:
    prefs = Preferences(timezone="Europe/Paris", quiet_hours=QuietHours("22:00", "09:00"))
    times = day_of_events("2026-03-28T12:00:00Z", hours=24)  # 13:00 CET Saturday; DST starts Sunday 02:00
    fires = fire_all(Window("daily", at="08:00"), times, PARIS, prefs)
    shown = local(fires[0][0], PARIS)
    assert (shown.date(), shown.hour, shown.minute, str(shown.utcoffset())) == (dt.date(2026, 3, 29), 9, 0, "2:00:00")


@given(kind=st.sampled_from(["every", "after_quiet", "max_wait"]), n=st.integers(0, 999_999), unit=st.sampled_from("smhd"))
def test_durations_are_accepted_exactly_within_their_limits(kind, n, unit) -> None:
    text = f"{n}{unit}"
    ms = parse_duration(text)
    assert ms == n * {"s": 1000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}[unit]
    fields = {"every": {"kind": "fixed"}, "after_quiet": {"kind": "sliding", "max_wait": "7d"},
              "max_wait": {"kind": "sliding", "after_quiet": "10s"}}[kind]
    window = Window(**fields, **{kind: text})
    errors = check_window(window, "digest.window")
    least, most = LIMITS[kind]
    assert (errors == []) == (least <= ms <= most), errors
    assert all(e.field == f"digest.window.{kind}" for e in errors)


def test_misspelt_windows_name_their_field() -> None:
    assert [e.field for e in check_window(Window("weekly"), "w")] == ["w.kind"]
    assert [e.field for e in check_window(Window("fixed"), "w")] == ["w.every"]
    assert [e.field for e in check_window(Window("fixed", every="1h", at="08:00"), "w")] == ["w.at"]
    for bad in ("1 h", "1H", "h", "-1h", "1.5h", "1h\n", "１h"):
        assert [e.field for e in check_window(Window("fixed", every=bad), "w")] == ["w.every"], bad
    assert [e.field for e in check_window(Window("daily", at="24:00"), "w")] == ["w.at"]


def test_a_users_override_of_the_key_then_of_the_category_wins() -> None:
    send = DigestSpec("comments", Window("fixed", every="1h"))
    daily = Window("daily", at="18:00")
    assert choose_window(send, Preferences(), "social") == send.window
    assert choose_window(send, Preferences(digests={"comments": daily}), None) == daily
    assert choose_window(send, Preferences(digests={"social": daily}), "social") == daily
    weekly = Window("weekly")  # stored before a rule existed: not applied
    assert choose_window(send, Preferences(digests={"comments": weekly}), None) == send.window
