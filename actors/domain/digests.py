"""Digests, pure: windows checked, when a window fires, the user's override, the digest's template data.

The Store keeps one open window per (user, digest key) with two times: `due_ms`, when it
fires, and `deadline_ms`, the latest it may fire. Each event hands the Store the pair it
would have if it opened the window (`event_times`); the Store keeps the opening event's
deadline and moves the due time to min(the event's due, the deadline) (`merge`, the model
of Store.add_digest_event that the property tests compare with each kind's definition):

- fixed `every`: due = deadline = first event + every (later events change nothing);
- sliding `after_quiet`, `max_wait`: due = last event + after_quiet, at most first event + max_wait;
- daily `at`: due = deadline = the next `at` on the user's clock after the first event
  (send_at.next_local: DST gaps and repeats as a scheduled send's), moved to the end of the
  user's quiet hours if it falls inside them;
- a critical event: due = now (the window fires at once, with everything it collected);
- a window that reaches MAX_EVENTS events is due at once too (a claim loads a window whole).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from protocol.digests import WINDOW_KINDS, DigestSpec, Window
from protocol.ids import make_notification_id, notification_id_ms
from protocol.preferences import HHMM_PATTERN, Preferences
from protocol.problems import FieldError

from .preferences import clock_minutes, quiet_until
from .send_at import next_local

SECOND_MS, MINUTE_MS, HOUR_MS, DAY_MS = 1000, 60_000, 3_600_000, 86_400_000
_UNITS = {"s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}
_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
# (least, most) of each duration, in ms
LIMITS: dict[str, tuple[int, int]] = {
    "every": (MINUTE_MS, 7 * DAY_MS),
    "after_quiet": (10 * SECOND_MS, DAY_MS),
    "max_wait": (10 * SECOND_MS, 7 * DAY_MS),
}
_FIELDS = {"fixed": ("every",), "sliding": ("after_quiet", "max_wait"), "daily": ("at",)}
DURATION_RULE = "a duration: digits then s, m, h or d (90s, 10m, 1h, 2d)"
MAX_EVENTS = 1000  # a window holding this many is due at once (Store.add_digest_event); one notification carries at most this many


def parse_duration(text: str) -> int | None:
    """`10m` as ms; None if misspelt."""
    match = _DURATION.fullmatch(text)
    return int(match.group(1)) * _UNITS[match.group(2)] if match else None


def _say(ms: int) -> str:
    for unit, size in (("d", DAY_MS), ("h", HOUR_MS), ("m", MINUTE_MS)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms // SECOND_MS}s"


def check_window(window: Window, field: str) -> list[FieldError]:
    """What makes a window wrong, each error naming its field under `field` (e.g. `digest.window.every`)."""
    if window.kind not in _FIELDS:
        return [FieldError(f"{field}.kind", f"one of {', '.join(WINDOW_KINDS)}")]
    errors: list[FieldError] = []
    wanted = _FIELDS[window.kind]
    for name in ("every", "after_quiet", "max_wait", "at"):
        value = getattr(window, name)
        if name in wanted and value is None:
            errors.append(FieldError(f"{field}.{name}", f"required for a {window.kind} window"))
        elif name not in wanted and value is not None:
            errors.append(FieldError(f"{field}.{name}", f"not for a {window.kind} window (it takes {', '.join(wanted)})"))
        elif value is not None and name == "at":
            if re.search(HHMM_PATTERN, value) is None:
                errors.append(FieldError(f"{field}.at", "a time of day as HH:MM, 00:00 to 23:59"))
        elif value is not None:
            spelt = parse_duration(value)
            least, most = LIMITS[name]
            if spelt is None:
                errors.append(FieldError(f"{field}.{name}", DURATION_RULE))
            elif not least <= spelt <= most:
                errors.append(FieldError(f"{field}.{name}", f"from {_say(least)} to {_say(most)}"))
    if not errors and window.kind == "sliding":
        quiet, longest = parse_duration(window.after_quiet or ""), parse_duration(window.max_wait or "")
        if quiet is not None and longest is not None and longest < quiet:
            errors.append(FieldError(f"{field}.max_wait", "at least after_quiet"))
    return errors


def choose_window(spec: DigestSpec, prefs: Preferences, category: str | None) -> Window:
    """The window of this send's digest for this user: their override of the key, else of the category, else the send's."""
    chosen = prefs.digests.get(spec.key)
    if chosen is None and category is not None:
        chosen = prefs.digests.get(category)
    return chosen if chosen is not None and not check_window(chosen, "") else spec.window


def daily_fire(at: str, after_ms: int, zone: dt.tzinfo, quiet: tuple[int, int] | None) -> int:
    """The next `at` on the user's clock after `after_ms`; the end of their quiet hours if it falls inside them."""
    due = next_local(at, zone, after_ms)
    if quiet is not None:
        until = quiet_until(due, zone, quiet[0], quiet[1])
        if until is not None:
            return until
    return due


def event_times(
    window: Window, at_ms: int, zone: dt.tzinfo, prefs: Preferences | None = None, *, critical: bool = False,
) -> tuple[int, int]:
    """(due_ms, deadline_ms) of a window this event would open (a checked window); see the module's docstring."""
    if window.kind == "fixed":
        due = deadline = at_ms + (parse_duration(window.every or "") or 0)
    elif window.kind == "sliding":
        due, deadline = at_ms + (parse_duration(window.after_quiet or "") or 0), at_ms + (parse_duration(window.max_wait or "") or 0)
    else:
        quiet_hours = prefs.quiet_hours if prefs is not None else None
        quiet = (clock_minutes(quiet_hours.start), clock_minutes(quiet_hours.end)) if quiet_hours is not None else None
        due = deadline = daily_fire(window.at or "00:00", at_ms, zone, quiet)
    return (at_ms if critical else due), deadline


@dataclass(frozen=True, slots=True)
class OpenWindow:
    """The Store's open window of one (user, key), as `merge` models it."""

    due_ms: int
    deadline_ms: int
    count: int
    first_ms: int
    last_ms: int


def merge(window: OpenWindow | None, at_ms: int, due_ms: int, deadline_ms: int, max_events: int = MAX_EVENTS) -> OpenWindow:
    """The window after one more event (Store.add_digest_event): the opening event's deadline, due at most that;
    due at once (at_ms) when the event fills it to max_events."""
    if window is None:
        return OpenWindow(min(due_ms, deadline_ms, at_ms if max_events <= 1 else deadline_ms), deadline_ms, 1, at_ms, at_ms)
    full = window.deadline_ms if window.count + 1 < max_events else at_ms
    return OpenWindow(
        min(due_ms, window.deadline_ms, full), window.deadline_ms, window.count + 1, min(window.first_ms, at_ms), max(window.last_ms, at_ms),
    )


def digest_notification_id(fire_id: str) -> str:
    """The notification id of a fired digest: its window's first event's time, and 80 bits of a hash of the window's id.

    The same on every node and every attempt, so a digest fired twice (a claimer that died after
    producing it) is one notification, and the send ledger sends it once.
    """
    digest = hashlib.blake2b(f"digest\x00{fire_id}".encode(), digest_size=10).digest()
    return make_notification_id(notification_id_ms(fire_id), int.from_bytes(digest, "big"))


def digest_data(events: list[tuple[int, dict[str, Any]]], iso: Any) -> dict[str, Any]:
    """The template's input: `events` (each event's data, with `at`), `count`, `first` and `last`."""
    items = [{**data, "at": iso(at_ms)} for at_ms, data in events]
    return {"events": items, "count": len(items), "first": items[0] if items else {}, "last": items[-1] if items else {}}
