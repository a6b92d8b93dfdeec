"""Consent when a delivery that waited goes out, the pure part: actors.domain.preferences.check_at_fire.

It must give the answer Ingress would give now (plan_channels over the same preferences):
the same skip reason for every priority, the current contact point or devices for an
address that came from the preferences, the send's own `to` kept, and quiet hours
holding only non-critical interruptive channels, until the window ends.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.preferences import NO_PROFILE, QUIET_CHANNELS, addresses_for, check_at_fire, plan_channels, waited
from protocol.api import NotificationRequest
from protocol.channels import Channel, Priority
from protocol.content import Content, EmailContent, PushContent, Recipient, SmsContent, WebContent
from protocol.messages import Delivery
from protocol.preferences import ChannelSwitches, ContactPoints, Preferences, Profile, QuietHours

UTC = dt.timezone.utc
NID = "01J0000000000000000000000A"
T0 = int(dt.datetime(2024, 6, 10, tzinfo=UTC).timestamp() * 1000)
CONTENT = Content(email=EmailContent("Hi", text="t"), sms=SmsContent("s"), push=PushContent("p"), web=WebContent("w"))
ZONES = [zoneinfo.ZoneInfo(z) for z in ("UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York")]

clock = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
preferences = st.builds(
    Preferences,
    contact=st.builds(
        ContactPoints,
        email=st.sampled_from([None, "old@example.org", "new@example.org"]),
        phone=st.sampled_from([None, "+15555550100", "+15555550199"]),
    ),
    channels=st.builds(ChannelSwitches, email=st.booleans(), sms=st.booleans(), push=st.booleans(), web=st.booleans()),
    opt_out=st.lists(st.sampled_from(["marketing", "news", "billing"]), unique=True, max_size=3),
    quiet_hours=st.none() | st.builds(QuietHours, clock, clock).filter(lambda q: q.start != q.end),
)
profiles = st.builds(Profile, preferences, st.lists(st.sampled_from(["d1", "d2", "d3"]), unique=True, max_size=3))
recipients = st.none() | st.builds(
    Recipient,
    email=st.sampled_from([None, "given@example.org"]),
    phone=st.sampled_from([None, "+15555550177"]),
    device_token=st.sampled_from([None, "given-device"]),
)


def request(channel: Channel, to: Recipient | None, category: str | None, priority: Priority) -> NotificationRequest:
    part = Content(**{channel.value: getattr(CONTENT, channel.value)})
    return NotificationRequest(user_id="alice", channels=[channel], content=part, to=to, category=category, priority=priority)


def planned(req: NotificationRequest, then: Profile, at_ms: int, zone: dt.tzinfo) -> Delivery | None:
    """The Delivery Ingress would have put on the bus (None if it was skipped or had no address then)."""
    channel = req.channels[0]
    plan = plan_channels(req, then, at_ms, zone)[channel]
    if plan.skip is not None or (channel is not Channel.WEB and not plan.addresses):
        return None
    return Delivery(
        NID, "alice", channel, at_ms, Content(**{channel.value: getattr(CONTENT, channel.value)}), address=plan.address,
        priority=req.priority, addresses=list(plan.addresses) if len(plan.addresses) > 1 else [], category=req.category,
        deferred=plan.defer_until_ms is not None, from_profile=plan.from_profile,
    )


@settings(max_examples=400, deadline=None)
@given(
    channel=st.sampled_from(list(Channel)),
    to=recipients,
    category=st.sampled_from([None, "marketing", "news", "billing"]),
    priority=st.sampled_from(list(Priority)),
    then=profiles,
    now=profiles,
    zone=st.sampled_from(ZONES),
    waited_ms=st.integers(0, 3 * 86_400_000),
)
def test_a_delivery_that_waited_meets_the_preferences_of_now(channel, to, category, priority, then, now, zone, waited_ms) -> None:
    req = request(channel, to, category, priority)
    delivery = planned(req, then, T0, zone)
    if delivery is None:
        return
    fire_ms = T0 + waited_ms
    check = check_at_fire(delivery, now, fire_ms, zone)
    again = plan_channels(req, now, fire_ms, zone)[channel]  # what Ingress would do with the same send now
    # Consent: the same reason as Ingress, for every priority.
    assert check.skip == again.skip or (check.skip is not None and again.skip is None and not again.addresses)
    if check.skip is not None:
        return
    sent = check.delivery
    # Where: a `to` the send gave is kept; an address from the preferences is the one they hold now.
    given_by_send = addresses_for(channel, to, NO_PROFILE)
    if channel is Channel.WEB:
        assert sent.address is None
    elif given_by_send:
        assert not delivery.from_profile and (sent.address, sent.addresses) == (delivery.address, delivery.addresses)
    else:
        current = addresses_for(channel, None, now)
        assert delivery.from_profile and current
        assert sent.address == current[0] and (sent.addresses or [sent.address]) == list(current)
    # When: quiet hours hold only what Ingress would hold now, until the same instant, later than now.
    assert check.hold_until_ms == again.defer_until_ms
    if check.hold_until_ms is not None:
        assert channel in QUIET_CHANNELS and priority is not Priority.CRITICAL and check.hold_until_ms > fire_ms
        assert sent.deferred  # produced by the Scheduler again: the provider checks the ledger


def test_the_reasons_are_the_ones_ingress_records() -> None:
    to = Recipient(email="given@example.org", phone="+15555550177")
    email = planned(request(Channel.EMAIL, to, "marketing", Priority.CRITICAL), NO_PROFILE, T0, UTC)
    sms = planned(request(Channel.SMS, to, None, Priority.NORMAL), NO_PROFILE, T0, UTC)
    assert email is not None and sms is not None
    opted_out = Profile(Preferences(opt_out=["marketing"]))
    assert check_at_fire(email, opted_out, T0, UTC).skip == "opted out: marketing"  # critical too
    assert check_at_fire(sms, Profile(Preferences(channels=ChannelSwitches(sms=False))), T0, UTC).skip == "sms turned off by the user"
    # An address from the preferences that is gone: skipped, saying which contact point.
    profile = Profile(Preferences(contact=ContactPoints(email="old@example.org")), devices=["d1"])
    mine = planned(request(Channel.EMAIL, None, None, Priority.NORMAL), profile, T0, UTC)
    push = planned(request(Channel.PUSH, None, None, Priority.NORMAL), profile, T0, UTC)
    assert mine is not None and mine.from_profile and push is not None and push.from_profile
    assert check_at_fire(mine, NO_PROFILE, T0, UTC).skip == "the user has no contact email any more"
    assert check_at_fire(push, NO_PROFILE, T0, UTC).skip == "the user has no registered push device any more"
    moved = check_at_fire(mine, Profile(Preferences(contact=ContactPoints(email="new@example.org"))), T0, UTC)
    assert moved.skip is None and moved.delivery.address == "new@example.org"
    more = check_at_fire(push, Profile(devices=["d1", "d2"]), T0, UTC).delivery
    assert (more.address, more.addresses) == ("d1", ["d1", "d2"])


def test_only_records_that_waited_are_checked_again() -> None:
    fresh = Delivery(NID, "alice", Channel.SMS, T0, Content(sms=SmsContent("s")), address="+15555550100")
    assert not waited(fresh)
    assert waited(msgspec.structs.replace(fresh, attempt=2))
    assert waited(msgspec.structs.replace(fresh, replays=1))
    assert waited(msgspec.structs.replace(fresh, deferred=True))
