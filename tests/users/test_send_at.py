"""send_at's rules, pure (actors/domain/send_at.py): offsets, bounds, grace, the user's wall clock across DST changes."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from actors.domain.send_at import MAX_AHEAD_MS, PAST_GRACE_MS, next_local, resolve
from protocol.api import LocalSendAt
from protocol.problems import FieldError
from reactor.clock import iso, parse_iso

PARIS = ZoneInfo("Europe/Paris")  # 2027-03-28 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET
NOW = parse_iso("2026-11-30T17:00:00Z")


def test_an_instant_with_an_offset_is_held_until_then() -> None:
    assert resolve("2026-12-01T09:00:00+01:00", NOW, PARIS) == parse_iso("2026-12-01T08:00:00Z")
    assert resolve("2026-12-01T08:00:00.250Z", NOW, PARIS) == parse_iso("2026-12-01T08:00:00.250Z")


@pytest.mark.parametrize(("text", "says"), [
    ("2026-12-01T09:00:00", "needs an offset"),  # naive: whose clock?
    ("2026-12-01", "needs an offset"),
    ("tomorrow at nine", "not an RFC 3339 time"),
    ("", "not an RFC 3339 time"),
    (iso(NOW + MAX_AHEAD_MS + 1000), "more than 366 days ahead"),
    (iso(NOW - PAST_GRACE_MS - 1000), "in the past"),
])
def test_what_is_refused_names_send_at(text: str, says: str) -> None:
    refused = resolve(text, NOW, PARIS)
    assert isinstance(refused, FieldError) and refused.field == "send_at" and says in refused.message


def test_a_time_just_past_is_sent_now_and_the_bound_ahead_is_inclusive() -> None:
    assert resolve(iso(NOW - PAST_GRACE_MS + 1000), NOW, PARIS) is None
    assert resolve(iso(NOW), NOW, PARIS) is None
    assert resolve(iso(NOW + MAX_AHEAD_MS), NOW, PARIS) == NOW + MAX_AHEAD_MS


def test_the_users_wall_time_is_its_next_showing() -> None:
    assert resolve(LocalSendAt("18:30"), NOW, PARIS) == parse_iso("2026-11-30T17:30:00Z")  # today, CET
    assert resolve(LocalSendAt("18:00"), NOW, PARIS) == parse_iso("2026-12-01T17:00:00Z")  # now exactly: tomorrow's
    assert resolve(LocalSendAt("09:00"), NOW, ZoneInfo("UTC")) == parse_iso("2026-12-01T09:00:00Z")


def test_across_spring_forward_nine_stays_nine_and_a_skipped_time_fires_as_far_past_the_change() -> None:
    saturday = parse_iso("2027-03-27T12:00:00Z")  # 13:00 CET
    assert next_local("09:00", PARIS, saturday) == parse_iso("2027-03-28T07:00:00Z")  # 09:00 CEST
    assert next_local("02:30", PARIS, saturday) == parse_iso("2027-03-28T01:30:00Z")  # 02:30 never shows: 03:30 CEST


def test_across_fall_back_a_time_shown_twice_fires_at_its_first_showing_or_the_second_if_only_that_is_ahead() -> None:
    saturday = parse_iso("2026-10-24T12:00:00Z")
    assert next_local("02:30", PARIS, saturday) == parse_iso("2026-10-25T00:30:00Z")  # 02:30 CEST
    between = parse_iso("2026-10-25T00:45:00Z")  # 02:45 CEST: the first 02:30 has gone, the second (CET) is ahead
    assert next_local("02:30", PARIS, between) == parse_iso("2026-10-25T01:30:00Z")
    assert next_local("09:00", PARIS, saturday) == parse_iso("2026-10-25T08:00:00Z")  # 09:00 CET


def test_the_schema_refuses_a_wall_time_that_is_not_hh_mm() -> None:
    import msgspec

    from protocol.api import NotificationRequest
    decode = msgspec.json.Decoder(NotificationRequest).decode
    for bad in (b'{"local": "9:00"}', b'{"local": "24:00"}', b'{"local": "09:00", "in": "server"}', b'{"local": "09:00", "at": 1}'):
        with pytest.raises(msgspec.ValidationError, match="send_at"):
            decode(b'{"channels": ["web"], "send_at": ' + bad + b"}")
