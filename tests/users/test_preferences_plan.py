"""Preferences, pure parts: validation, the per-channel plan, unsubscribe tokens; the push and email sandboxes."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import zoneinfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.clients.sandbox import EmailOutbox, JsonLinesSink, build_email
from actors.domain.preferences import InvalidUnsubscribeToken, check_preferences, issue_unsubscribe_token, plan_channels, verify_unsubscribe_token, with_opt_out
from actors.domain.tokens import SigningKeys, issue_token
from actors.ingress import check_request
from protocol.api import NotificationRequest
from protocol.channels import Channel, Priority
from protocol.content import Content, EmailContent, PushContent, Recipient, SmsContent, WebContent
from protocol.keys import SigningKey
from protocol.lifecycle import Status
from protocol.messages import Delivery, PermanentFailure, Sent
from protocol.preferences import ChannelSwitches, ContactPoints, Preferences, Profile, QuietHours
from tests.auth.token_cases import non_canonical

ZONES = zoneinfo.available_timezones()
UTC = dt.timezone.utc
NID = "01J0000000000000000000000A"
NOON = int(dt.datetime(2024, 6, 10, 12, tzinfo=UTC).timestamp() * 1000)
CONTENT = Content(
    email=EmailContent("Hi", text="t"), sms=SmsContent("s"), push=PushContent("p"), web=WebContent("w"),
)


def request(*channels: Channel, **kw: object) -> NotificationRequest:
    parts = {c.value: getattr(CONTENT, c.value) for c in channels}
    return NotificationRequest(user_id="alice", channels=list(channels), content=Content(**parts), **kw)  # type: ignore[arg-type]


def test_check_preferences_names_the_field() -> None:
    good = Preferences(timezone="Europe/Paris", quiet_hours=QuietHours("22:00", "07:00"), opt_out=["marketing"])
    assert check_preferences(good, ZONES) == []
    bad = Preferences(timezone="Mars/Olympus_Mons", quiet_hours=QuietHours("08:00", "08:00"), opt_out=["a", "a"])
    assert [e.field for e in check_preferences(bad, ZONES)] == ["timezone", "quiet_hours", "opt_out"]
    assert [e.field for e in check_preferences(Preferences(timezone="localtime"), ZONES | {"localtime"})] == ["timezone"]


def test_addresses_come_from_to_then_from_the_preferences() -> None:
    profile = Profile(Preferences(contact=ContactPoints("a@example.org", "+15555550101")), devices=["d1", "d2"])
    plans = plan_channels(request(Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.WEB), profile, NOON, UTC)
    assert {c: p.addresses for c, p in plans.items()} == {
        Channel.EMAIL: ("a@example.org",), Channel.SMS: ("+15555550101",), Channel.PUSH: ("d1", "d2"), Channel.WEB: (),
    }
    to = Recipient(email="b@example.org", device_token="only-this")
    plans = plan_channels(request(Channel.EMAIL, Channel.SMS, Channel.PUSH, to=to), profile, NOON, UTC)
    assert plans[Channel.EMAIL].address == "b@example.org"
    assert plans[Channel.SMS].address == "+15555550101"
    assert plans[Channel.PUSH].addresses == ("only-this",)  # `to` wins: that one device only


def test_a_missing_address_is_a_422_only_when_neither_to_nor_the_preferences_have_it() -> None:
    sms = request(Channel.SMS, Channel.PUSH)
    assert [e.field for e in check_request(sms)] == ["to.phone", "to.device_token"]
    assert check_request(sms, Profile(Preferences(contact=ContactPoints(phone="+15555550101")), devices=["d"])) == []
    # A channel the user turned off needs no address: it is recorded as failed instead.
    off = Profile(Preferences(channels=ChannelSwitches(sms=False, push=False)))
    assert check_request(sms, off) == []


def test_opt_outs_and_switches_hold_for_every_priority() -> None:
    prefs = Preferences(opt_out=["marketing"], channels=ChannelSwitches(sms=False), quiet_hours=QuietHours("00:00", "23:59"))
    profile = Profile(prefs, devices=["d"])
    to = Recipient(email="a@example.org", phone="+15555550101")
    for priority in Priority:
        plans = plan_channels(
            request(Channel.EMAIL, Channel.SMS, Channel.PUSH, to=to, category="marketing", priority=priority), profile, NOON, UTC,
        )
        assert {c: p.skip for c, p in plans.items()} == {
            Channel.EMAIL: "opted out: marketing", Channel.SMS: "opted out: marketing", Channel.PUSH: "opted out: marketing",
        }
    plans = plan_channels(request(Channel.SMS, Channel.PUSH, to=to, priority=Priority.CRITICAL), profile, NOON, UTC)
    assert plans[Channel.SMS].skip == "sms turned off by the user"
    assert plans[Channel.PUSH].skip is None and plans[Channel.PUSH].defer_until_ms is None  # critical: no quiet hours
    other = plan_channels(request(Channel.PUSH, category="billing"), profile, NOON, UTC)[Channel.PUSH]
    assert other.skip is None and other.defer_until_ms is not None


def test_quiet_hours_hold_the_interruptive_channels_of_non_critical_notifications() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    profile = Profile(Preferences(timezone="Europe/Paris", quiet_hours=QuietHours("13:00", "15:30")), devices=["d"])
    to = Recipient(email="a@example.org", phone="+15555550101")
    everything = (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.WEB)
    plans = plan_channels(request(*everything, to=to), profile, NOON, paris)  # 14:00 in Paris
    until = int(dt.datetime(2024, 6, 10, 15, 30, tzinfo=paris).timestamp() * 1000)
    assert {c: p.defer_until_ms for c, p in plans.items()} == {
        Channel.EMAIL: until, Channel.SMS: until, Channel.PUSH: until, Channel.WEB: None,  # in-app web makes no sound
    }
    critical = plan_channels(request(*everything, to=to, priority=Priority.CRITICAL), profile, NOON, paris)
    assert all(p.defer_until_ms is None for p in critical.values())
    in_utc = plan_channels(request(*everything, to=to), profile, NOON, UTC)  # 12:00 UTC: outside the window
    assert all(p.defer_until_ms is None for p in in_utc.values())


@given(st.text(min_size=1, max_size=128), st.from_regex(r"^[a-z0-9][a-z0-9_.-]{0,63}$", fullmatch=True))
def test_unsubscribe_tokens_round_trip_and_refuse_tampering(user: str, category: str) -> None:
    keys = SigningKeys([SigningKey("k1", b"s" * 32, 0)], "k1")
    token = issue_unsubscribe_token(keys, user, category)
    assert verify_unsubscribe_token(keys, token) == (user, category)
    kid, body, signature = token.split(".")
    for bad in (f"{kid}.{body}.{signature[:-2]}AA", f"{kid}.{body[:-1]}x.{signature}", token + ".x", "", "abc", f"{body}.{signature}",
                *non_canonical(token).values()):
        if bad != token:
            with pytest.raises(InvalidUnsubscribeToken):
                verify_unsubscribe_token(keys, bad)
    with pytest.raises(InvalidUnsubscribeToken):
        verify_unsubscribe_token(SigningKeys([SigningKey("k1", b"t" * 32, 0)], "k1"), token)


def test_a_subscriber_token_is_not_an_unsubscribe_token() -> None:
    keys = SigningKeys.generate()
    with pytest.raises(InvalidUnsubscribeToken):
        verify_unsubscribe_token(keys, issue_token(keys, "alice", 2**40))


def test_with_opt_out_is_idempotent_and_bounded() -> None:
    prefs = with_opt_out(Preferences(), "marketing")
    assert prefs.opt_out == ["marketing"] and with_opt_out(prefs, "marketing") is prefs
    full = Preferences(opt_out=[f"c{i}" for i in range(100)])
    with pytest.raises(ValueError):
        with_opt_out(full, "one-more")


def delivery(channel: Channel, **kw: object) -> Delivery:
    content = Content(**{channel.value: getattr(CONTENT, channel.value)})
    return Delivery(NID, "alice", channel, NOON, content, **kw)  # type: ignore[arg-type]


def test_email_carries_a_one_click_unsubscribe_header() -> None:
    url = "https://herald.example/v1/unsubscribe?token=" + "x" * 300  # longer than a folded line: must stay one URL
    message = build_email(delivery(Channel.EMAIL, address="a@example.org", unsubscribe_url=url), "h@example.org", NOON)
    parsed = email.message_from_bytes(bytes(message), policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == f"<{url}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f"List-Unsubscribe: <{url}>" in bytes(message).decode()  # not an RFC 2047 encoded word
    plain = build_email(delivery(Channel.EMAIL, address="a@example.org"), "h@example.org", NOON)
    assert plain["List-Unsubscribe"] is None


async def test_push_goes_to_every_device_and_reports_unregistered_ones(tmp_path) -> None:
    sink = JsonLinesSink(tmp_path / "push.jsonl", "push")
    outcome = await sink.send(delivery(Channel.PUSH, address="d1", addresses=["d1", "unregistered-d2", "d3"]))
    assert isinstance(outcome, Sent) and outcome.unregistered_tokens == ["unregistered-d2"]
    lines = [json.loads(line) for line in (tmp_path / "push.jsonl").read_text().splitlines()]
    assert [line["to"] for line in lines] == ["d1", "d3"]
    again = await sink.send(delivery(Channel.PUSH, address="d1", addresses=["d1", "d3"]))  # a redelivery
    assert isinstance(again, Sent) and sink.duplicates_refused == 1
    assert len((tmp_path / "push.jsonl").read_text().splitlines()) == 2
    gone = await sink.send(delivery(Channel.PUSH, address="unregistered-x"))
    assert gone == PermanentFailure("unregistered", unregistered_tokens=["unregistered-x"])
    sms = JsonLinesSink(tmp_path / "sms.jsonl", "sms")  # only push tokens can be unregistered
    assert isinstance(await sms.send(delivery(Channel.SMS, address="unregistered-555")), Sent)
    fresh = JsonLinesSink(tmp_path / "push.jsonl", "push")  # a restart reloads what was sent, per address
    assert isinstance(await fresh.send(delivery(Channel.PUSH, address="d3")), Sent) and fresh.duplicates_refused == 1


async def test_email_outbox_writes_the_header(tmp_path) -> None:
    outbox = EmailOutbox(tmp_path / "outbox", "h@example.org")
    outcome = await outbox.send(delivery(Channel.EMAIL, address="a@example.org", unsubscribe_url="https://h.example/u?token=t"))
    assert isinstance(outcome, Sent) and outcome.status is Status.DELIVERED
    parsed = email.message_from_bytes((tmp_path / "outbox" / f"{NID}.eml").read_bytes(), policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == "<https://h.example/u?token=t>"


def test_preferences_schema_names_the_field() -> None:
    decoder = msgspec.json.Decoder(Preferences)
    for body, field in [
        (b'{"contact": {"phone": "555"}}', "$.contact.phone"),
        (b'{"contact": {"email": "not-an-address"}}', "$.contact.email"),
        (b'{"channels": {"fax": false}}', "$.channels"),
        (b'{"quiet_hours": {"start": "24:00", "end": "07:00"}}', "$.quiet_hours.start"),
        (b'{"locale": "french!"}', "$.locale"),
        (b'{"opt_out": ["Marketing"]}', "$.opt_out[0]"),
    ]:
        with pytest.raises(msgspec.ValidationError, match=field.replace("$", r"\$").replace("[", r"\[").replace("]", r"\]")):
            decoder.decode(body)
    assert decoder.decode(b'{"locale": "zh-Hant-TW"}').locale == "zh-Hant-TW"
