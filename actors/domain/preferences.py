"""Preferences, pure: validation, the quiet-hours window, the per-channel plan, unsubscribe tokens.

No I/O here: time zones come in as loaded `tzinfo` objects and the set of known zone
keys as a container (actors.services.user_directory loads both off the Trio loop), so everything below
can be property-tested.

The rules Ingress applies (documented in docs/architecture.md, "Preferences"):
- An address in the request's `to` wins; otherwise the user's contact point (email,
  phone) or, for push, every registered device token.
- A channel the user turned off, or a notification whose `category` the user opted out
  of, is not delivered: it is recorded as failed with the reason. This holds for every
  priority; a notification without a category cannot be opted out of by category.
- Quiet hours hold the interruptive channels (email, SMS, push) of a non-critical
  notification until the window ends; critical ones (one-time codes, security alerts)
  go at once, and so does the in-app web channel, which makes no sound.

The same rules hold when a delivery that waited goes out (`check_at_fire`, applied by
the PartitionConsumer to held, retried and replayed records): consent, channel switches
and, for addresses that came from the user's preferences, the contact points and
devices are read again then.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass

import msgspec

from protocol.api import NotificationRequest
from protocol.channels import Channel, Priority
from protocol.content import Recipient
from protocol.header_safe import address_problem
from protocol.messages import Delivery
from protocol.preferences import CATEGORY_PATTERN, MAX_OPT_OUTS, Preferences, Profile
from protocol.problems import FieldError
from protocol.webhook_url import url_problem

from .tokens import InvalidToken, SigningKeys, sign_claims, verify_claims

QUIET_CHANNELS = frozenset({Channel.EMAIL, Channel.SMS, Channel.PUSH})
UNSAFE_ZONES = frozenset({"localtime", "posixrules", "Factory"})  # the server's own zone, or placeholders
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
_CATEGORY_RE = re.compile(CATEGORY_PATTERN)


NO_PROFILE = Profile()  # a user who never set preferences nor registered a device


# -- validation


def check_preferences(prefs: Preferences, known_zones: Container[str]) -> list[FieldError]:
    """Rules the schema cannot express: an IANA time zone that exists, a quiet-hours window that is not empty,
    a contact email that can go in an email header (protocol.header_safe), digest windows (actors/domain/digests.py)."""
    errors: list[FieldError] = []
    if prefs.contact.email is not None:
        problem = address_problem(prefs.contact.email)
        if problem is not None:
            errors.append(FieldError("contact.email", problem))
    if prefs.contact.webhook is not None:
        problem = url_problem(prefs.contact.webhook)
        if problem is not None:
            errors.append(FieldError("contact.webhook", problem))
    if prefs.timezone in UNSAFE_ZONES or prefs.timezone not in known_zones:
        message = f"unknown IANA time zone {prefs.timezone!r} (e.g. Europe/Paris, America/New_York, UTC)"
        errors.append(FieldError("timezone", message))
    if prefs.quiet_hours is not None and prefs.quiet_hours.start == prefs.quiet_hours.end:
        errors.append(FieldError("quiet_hours", "start and end are equal: the window would be empty"))
    if len(set(prefs.opt_out)) != len(prefs.opt_out):
        errors.append(FieldError("opt_out", "a category is listed twice"))
    from .digests import check_window  # it reads this module's quiet hours

    for key, window in prefs.digests.items():  # a user's digest overrides: windows as a send's are checked
        errors.extend(check_window(window, f"digests.{key}"))
    return errors


def clock_minutes(hhmm: str) -> int:
    """Minutes after midnight of an "HH:MM" clock time."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


# -- quiet hours


def _local(ms: int, zone: dt.tzinfo) -> dt.datetime:
    return (_EPOCH + ms * _MS).astimezone(zone)


def _wall(ms: int, zone: dt.tzinfo) -> dt.datetime:
    return _local(ms, zone).replace(tzinfo=None)


def _utc_ms(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // _MS


def first_instant_at(wall: dt.datetime, zone: dt.tzinfo) -> int:
    """The first instant (UTC ms) at which the local clock reads `wall` or later.

    A wall time that exists once is that instant; one repeated by a DST fall-back is
    its first occurrence; one skipped by a DST gap is the instant the clock jumps.
    """
    u0 = _utc_ms(wall.replace(tzinfo=zone, fold=0))
    u1 = _utc_ms(wall.replace(tzinfo=zone, fold=1))
    lo, hi = min(u0, u1), max(u0, u1)
    if _wall(lo, zone) == wall:
        return lo
    # In a gap: the clock reads before `wall` at lo and after it at hi; find the jump.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, zone) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _window(day: dt.date, zone: dt.tzinfo, start: int, end: int) -> tuple[int, int]:
    """The quiet window that opens on local date `day`, as [opens, closes) in UTC ms."""
    close_day = day + dt.timedelta(days=1) if end <= start else day
    opens = first_instant_at(dt.datetime.combine(day, dt.time(start // 60, start % 60)), zone)
    closes = first_instant_at(dt.datetime.combine(close_day, dt.time(end // 60, end % 60)), zone)
    return opens, closes


def quiet_until(now_ms: int, zone: dt.tzinfo, start: int, end: int) -> int | None:
    """When the quiet window holding `now_ms` ends (UTC ms), or None if now is outside every window.

    `start` and `end` are minutes after local midnight; the window crosses midnight
    when end <= start (start == end is no window). Each day's window opens the first
    moment the user's clock reads `start` and closes the first moment it reads `end`:
    a DST gap that skips `end` closes it when the clock jumps, and an hour repeated by
    a fall-back inside the window only makes it an hour longer.
    """
    if start == end:
        return None
    today = _local(now_ms, zone).date()
    for offset in (-1, 0, 1):
        day = today + dt.timedelta(days=offset)
        opens, closes = _window(day, zone, start, end)
        if opens <= now_ms < closes:
            for _ in range(3):  # a DST gap may skip all the time between two windows: they then join
                day += dt.timedelta(days=1)
                next_opens, next_closes = _window(day, zone, start, end)
                if next_opens > closes:
                    break
                closes = max(closes, next_closes)
            return closes
    return None


# -- the plan per channel


class ChannelPlan(msgspec.Struct, frozen=True, gc=False):
    """What Ingress does with one channel of a notification (a Struct: made per item, ~5x cheaper than a frozen dataclass)."""

    channel: Channel
    addresses: tuple[str, ...] = ()  # push: every device token to reach; else at most one
    skip: str | None = None  # why the channel is not delivered (recorded as failed)
    defer_until_ms: int | None = None  # quiet hours: hand to the Scheduler, due then
    from_profile: bool = False  # the addresses are the user's contact point or devices (read again if it waits)

    @property
    def address(self) -> str | None:
        """The first (for email and SMS, the only) address."""
        return self.addresses[0] if self.addresses else None


def skip_reason(prefs: Preferences, channel: Channel, category: str | None) -> str | None:
    """Why the user's preferences stop this channel, or None if they let it through."""
    if category is not None and category in prefs.opt_out:
        return f"opted out: {category}"
    if not prefs.channels.allows(channel):
        return f"{channel.value} turned off by the user"
    return None


def undeliverable_reason(prefs: Preferences, channel: Channel, address: str | None) -> str | None:
    """Why a send to `address` is skipped: a provider's receipt marked it undeliverable (None if it did not)."""
    if channel not in (Channel.EMAIL, Channel.SMS):
        return None
    mark = prefs.undeliverable_mark(channel, address)
    if mark is None:
        return None
    return (f"undeliverable: {mark.address} was marked ({mark.reason or 'by a receipt'}); "
            "PUT the user's preferences without it in `undeliverable` to send to it again")


def addresses_for(channel: Channel, to: Recipient | None, profile: Profile) -> tuple[str, ...]:
    """Where to send: the request's `to` if it says, else the user's contact point or devices."""
    contact = profile.preferences.contact
    if channel is Channel.EMAIL:
        email = (to.email if to is not None else None) or contact.email
        return (email,) if email else ()
    if channel is Channel.SMS:
        phone = (to.phone if to is not None else None) or contact.phone
        return (phone,) if phone else ()
    if channel is Channel.PUSH:
        if to is not None and to.device_token:
            return (to.device_token,)
        return tuple(profile.devices)
    if channel is Channel.WEBHOOK:
        url = (to.webhook if to is not None else None) or contact.webhook
        return (url,) if url else ()
    return ()


def address_missing(request: NotificationRequest, profile: Profile, channel: Channel) -> bool:
    """True if the channel will be delivered but neither the request nor the user's preferences say where."""
    if channel is Channel.WEB or skip_reason(profile.preferences, channel, request.category) is not None:
        return False
    return not addresses_for(channel, request.to, profile)


def plan_channels(request: NotificationRequest, profile: Profile, now_ms: int, zone: dt.tzinfo) -> dict[Channel, ChannelPlan]:
    """Per requested channel: its addresses, or why it is skipped, or until when quiet hours hold it."""
    prefs = profile.preferences
    defer: int | None = None
    if prefs.quiet_hours is not None and request.priority is not Priority.CRITICAL:
        defer = quiet_until(now_ms, zone, clock_minutes(prefs.quiet_hours.start), clock_minutes(prefs.quiet_hours.end))
    plans: dict[Channel, ChannelPlan] = {}
    for channel in request.channels:
        reason = skip_reason(prefs, channel, request.category)
        if reason is not None:
            plans[channel] = ChannelPlan(channel, skip=reason)
        else:
            held = defer if channel in QUIET_CHANNELS else None
            addresses = addresses_for(channel, request.to, profile)
            given = addresses_for(channel, request.to, NO_PROFILE)  # what the send's `to` says for this channel
            marked = undeliverable_reason(prefs, channel, addresses[0] if addresses else None)
            if marked is not None:
                plans[channel] = ChannelPlan(channel, skip=marked)
                continue
            plans[channel] = ChannelPlan(channel, addresses, defer_until_ms=held, from_profile=bool(addresses) and not given)
    return plans


# -- when a delivery that waited goes out


@dataclass(frozen=True, slots=True)
class FireCheck:
    """What the consumer does with a delivery that waited, by the user's preferences now."""

    delivery: Delivery  # to hand to the provider (addresses read again), unless skip or hold says otherwise
    skip: str | None = None  # no longer allowed: recorded failed with this reason
    hold_until_ms: int | None = None  # quiet hours now: back to the Scheduler, due then


def waited(delivery: Delivery) -> bool:
    """True for a record that may have waited since Ingress planned it: held, retried or replayed.

    Only these are checked again when they go out; a fresh record was planned a moment ago.
    """
    return delivery.attempt > 1 or delivery.replays > 0 or delivery.deferred


_CONTACT_NAMES = {
    Channel.EMAIL: "contact email", Channel.SMS: "contact phone", Channel.PUSH: "registered push device",
    Channel.WEBHOOK: "webhook URL",
}


def check_at_fire(delivery: Delivery, profile: Profile, now_ms: int, zone: dt.tzinfo) -> FireCheck:
    """Ingress's rules applied again as the delivery goes out, to the preferences as they are now.

    - an opted-out category or a channel turned off: skip, with the reason Ingress gives
      (for every priority);
    - an address that came from the preferences (`from_profile`) is read again: the
      current contact point, or every device registered now; none left: skip. An
      address the send gave in `to` is kept;
    - quiet hours now (interruptive channel, not critical): hold until the window ends.
    """
    channel = delivery.channel
    prefs = profile.preferences
    reason = skip_reason(prefs, channel, delivery.category)
    if reason is not None:
        return FireCheck(delivery, skip=reason)
    if delivery.from_profile and channel is not Channel.WEB:
        addresses = addresses_for(channel, None, profile)
        if not addresses:
            return FireCheck(delivery, skip=f"the user has no {_CONTACT_NAMES[channel]} any more")
        current = list(addresses) if len(addresses) > 1 else []
        if addresses[0] != delivery.address or current != delivery.addresses:
            delivery = msgspec.structs.replace(delivery, address=addresses[0], addresses=current)
    marked = undeliverable_reason(prefs, channel, delivery.address)
    if marked is not None:
        return FireCheck(delivery, skip=marked)
    if prefs.quiet_hours is not None and channel in QUIET_CHANNELS and delivery.priority is not Priority.CRITICAL:
        until = quiet_until(now_ms, zone, clock_minutes(prefs.quiet_hours.start), clock_minutes(prefs.quiet_hours.end))
        if until is not None:
            return FireCheck(msgspec.structs.replace(delivery, deferred=True), hold_until_ms=until)
    return FireCheck(delivery)


# -- one-click unsubscribe tokens (RFC 8058)
#
# sign_claims's format with the claims {"u": user_id, "c": category}, under a key derived
# from the signing key for this purpose only, so that neither a subscriber token nor
# anything else signed with the node's keys can pass for one. They do not expire: an
# unsubscribe link in an old email must keep working (while its kid stays in the ring).

UNSUBSCRIBE_PURPOSE = b"herald/unsubscribe/v1"


class InvalidUnsubscribeToken(Exception):
    pass


def issue_unsubscribe_token(keys: SigningKeys, user_id: str, category: str) -> str:
    """A signed token that opts `user_id` out of `category` when posted to /v1/unsubscribe."""
    return sign_claims(keys, {"u": user_id, "c": category}, UNSUBSCRIBE_PURPOSE)


def verify_unsubscribe_token(keys: SigningKeys, token: str) -> tuple[str, str]:
    """The (user_id, category) a token was issued for; InvalidUnsubscribeToken if tampered with."""
    try:
        claims = verify_claims(keys, token, UNSUBSCRIBE_PURPOSE)
    except InvalidToken as exc:
        raise InvalidUnsubscribeToken(str(exc)) from exc
    user_id, category = claims.get("u"), claims.get("c")
    if not isinstance(user_id, str) or not isinstance(category, str) or not _CATEGORY_RE.match(category):
        raise InvalidUnsubscribeToken("malformed token")
    return user_id, category


def without_webhook(prefs: Preferences, urls: Iterable[str]) -> Preferences:
    """The same preferences without the contact webhook URL if it is one of `urls` (an endpoint that answered 410 Gone)."""
    if prefs.contact.webhook is None or prefs.contact.webhook not in set(urls):
        return prefs
    return msgspec.structs.replace(prefs, contact=msgspec.structs.replace(prefs.contact, webhook=None))


def with_opt_out(prefs: Preferences, category: str) -> Preferences:
    """The same preferences, opted out of `category` too (unchanged if it already was).

    ValueError if the user already opted out of MAX_OPT_OUTS categories.
    """
    if category in prefs.opt_out:
        return prefs
    if len(prefs.opt_out) >= MAX_OPT_OUTS:
        raise ValueError(f"already opted out of {MAX_OPT_OUTS} categories")
    return msgspec.structs.replace(prefs, opt_out=[*prefs.opt_out, category])
