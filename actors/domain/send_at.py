"""`send_at`, pure: when a scheduled send fires (UTC ms), or why it is refused.

Rules (README, "Scheduled sends"):

- RFC 3339 with an offset (`Z` or `+01:00`); a time without one is refused (whose clock?).
- At most MAX_AHEAD_MS ahead (366 days): further is refused.
- In the past by at most PAST_GRACE_MS (60 s: a client's clock a little behind, a request that waited in a
  queue): sent at once, as if `send_at` were not given (`None`). Further in the past: refused, since a
  "send at 09:00" that arrives at 11:00 is most likely a mistake better answered than acted on.
- `{"local": "HH:MM", "in": "user"}`: the first instant after now at which the user's wall clock (their
  preferences' IANA `timezone`) shows HH:MM. DST: a time the clock skips (02:30 on a spring-forward night
  in Europe) fires as many minutes after the change as it lay after the skipped hour's start (03:30
  local, zoneinfo's fold=0 reading); a time the clock shows twice (01:30 on a fall-back night) fires at
  its first showing, or at its second if only that one is still ahead.
"""

from __future__ import annotations

import datetime as dt

from protocol.api import LocalSendAt
from protocol.problems import FieldError

SEND_AT_PREFIX = "send:"  # a scheduled send's Scheduler entry: send:<notification id>:<channel>
MAX_AHEAD_MS = 366 * 24 * 3600 * 1000
PAST_GRACE_MS = 60_000
FIELD = "send_at"


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def parse_instant(text: str) -> int | FieldError:
    """An RFC 3339 time with an offset, as UTC ms; a FieldError naming `send_at` for anything else."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return FieldError(FIELD, "not an RFC 3339 time (e.g. 2026-12-01T09:00:00+01:00)")
    if moment.tzinfo is None:
        return FieldError(FIELD, "needs an offset (Z or +HH:MM): a time without one names no instant")
    return _ms(moment)


def next_local(hhmm: str, zone: dt.tzinfo, now_ms: int) -> int:
    """The first instant after now_ms at which the wall clock in `zone` shows hh:mm (DST rules in the module docstring)."""
    hour, minute = int(hhmm[:2]), int(hhmm[3:5])
    now_local = dt.datetime.fromtimestamp(now_ms / 1000, zone)
    day = now_local.date()
    for offset in range(0, 3):  # today, or tomorrow (a day after that covers a skipped time's shifted instant)
        date = day + dt.timedelta(days=offset)
        for fold in (0, 1):  # an ambiguous time's first showing, then its second (the same instant when unambiguous)
            local = dt.datetime(date.year, date.month, date.day, hour, minute, tzinfo=zone, fold=fold)
            at = _ms(local)
            if at > now_ms:
                return at
    raise AssertionError("a wall time recurs within three days")  # pragma: no cover


def resolve(send_at: str | LocalSendAt, now_ms: int, zone: dt.tzinfo) -> int | None | FieldError:
    """When the send fires (UTC ms); None: now (no holding); a FieldError naming `send_at` if refused."""
    if isinstance(send_at, LocalSendAt):
        return next_local(send_at.local, zone, now_ms)
    at = parse_instant(send_at)
    if isinstance(at, FieldError):
        return at
    if at > now_ms + MAX_AHEAD_MS:
        return FieldError(FIELD, "more than 366 days ahead")
    if at < now_ms - PAST_GRACE_MS:
        return FieldError(FIELD, "in the past (more than 60 s ago)")
    return at if at > now_ms else None
