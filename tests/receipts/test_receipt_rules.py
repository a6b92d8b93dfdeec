"""The receipts' pure rules (actors/domain/receipts.py) and the service's replay memory (actors/services/receipts.py).

Twilio's signature is checked against the example in Twilio's own security documentation; the mapping table's rows;
malformed bodies named; and the replay memory shared through one State by two services (two nodes), with what a
failed write remembered forgotten so the provider's retry is taken."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from actors.domain.receipts import (
    Malformed,
    Refused,
    load_sendgrid_key,
    parse_sendgrid,
    parse_twilio,
    sendgrid_meaning,
    twilio_signature,
    verify_sendgrid,
    verify_twilio,
)
from actors.services.receipts import Receipts, ReceiptSettings
from protocol.lifecycle import Status
from reactor.backends import local_state
from reactor.ports import PortUnavailable
from tests.providers.sendgrid_emulator import EventWebhook


def test_twilio_signature_matches_twilios_own_test_vector() -> None:
    # twilio-ruby's spec/util/request_validator_spec.rb ("should properly validate a Twilio Voice request")
    params = {
        "ToState": "California", "CalledState": "California", "Direction": "inbound", "FromState": "CA",
        "AccountSid": "ACba8bc05eacf94afdae398e642c9cc32d", "Caller": "+14153595711", "CallerZip": "94108",
        "CallerCountry": "US", "From": "+14153595711", "FromCity": "SAN FRANCISCO", "CallerCity": "SAN FRANCISCO",
        "To": "+14157669926", "FromZip": "94108", "FromCountry": "US", "ToCity": "", "CallStatus": "ringing",
        "CalledCity": "", "CallerState": "CA", "CalledZip": "", "ToZip": "", "ToCountry": "US",
        "CallSid": "CA136d09cd59a3c0ec8dbff44da5c03f31", "CalledCountry": "US", "Called": "+14157669926",
        "ApiVersion": "2010-04-01", "ApplicationSid": "AP44efecad51364e80b133bb7c07eb8204",
    }
    token, url, signature = "2bd9e9638872de601313dc77410d3b23", "http://twiliotests.heroku.com/validate/voice", "oVb2kXoVy8GEfwBDjR8bk/ZZ6eA="
    assert twilio_signature(token, url, params.items()) == signature
    verify_twilio(["other", token], signature, url, list(params.items()))
    with pytest.raises(Refused) as refused:
        verify_twilio([token], signature, url.replace("twiliotests.heroku.com", "evil.example"), list(params.items()))
    assert refused.value.status == 403
    with pytest.raises(Refused) as unsigned:
        verify_twilio([token], None, url, list(params.items()))
    assert unsigned.value.status == 401


def test_sendgrid_signature_window_and_keys() -> None:
    hook, other = EventWebhook(), EventWebhook()
    key = load_sendgrid_key(hook.public_key)
    body = b'[{"event":"delivered"}]'
    now = time.time()
    headers = hook.headers(body, int(now))
    sig, stamp = headers["X-Twilio-Email-Event-Webhook-Signature"], headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    verify_sendgrid([load_sendgrid_key(other.public_key), key], sig, stamp, body, now, 300)
    for args, status in (((sig, stamp, body + b" ", now), 403), ((sig, stamp, body, now + 301), 403), ((None, stamp, body, now), 401),
                         (("not base64!", stamp, body, now), 403), ((sig, "12x", body, now), 403)):
        with pytest.raises(Refused) as refused:
            verify_sendgrid([key], *args, 300)  # type: ignore[arg-type]
        assert refused.value.status == status, args
    with pytest.raises(ValueError):
        load_sendgrid_key(base64.b64encode(b"not a key").decode())
    rsa_like = ec.generate_private_key(ec.SECP384R1()).public_key()  # the wrong curve
    from cryptography.hazmat.primitives import serialization
    der = rsa_like.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="P-256"):
        load_sendgrid_key(base64.b64encode(der).decode())


@pytest.mark.parametrize(("event", "kind", "status", "marks"), [
    ("delivered", "", Status.DELIVERED, False),
    ("bounce", "bounce", Status.FAILED, True),
    ("bounce", "blocked", Status.FAILED, False),
    ("deferred", "", Status.SENT, False),
    ("open", "", Status.OPENED, False),
    ("click", "", Status.OPENED, False),
    ("spamreport", "", Status.DELIVERED, True),
    ("unsubscribe", "", Status.DELIVERED, True),
    ("group_unsubscribe", "", Status.DELIVERED, False),
    ("processed", "", None, False),
])
def test_sendgrid_mapping(event: str, kind: str, status: Status | None, marks: bool) -> None:
    got, _, undeliverable = sendgrid_meaning(event, kind, "550 no such user", "")
    assert got is status and (undeliverable is not None) is marks


def test_sendgrid_dropped_marks_only_for_a_suppressed_address() -> None:
    assert sendgrid_meaning("dropped", "", "", "Bounced Address")[2] is not None
    assert sendgrid_meaning("dropped", "", "", "Spam Reporting Address")[2] is not None
    assert sendgrid_meaning("dropped", "", "", "Exceeded Maximum Count of Retries")[2] is None


def test_twilio_mapping_and_errors() -> None:
    base = [("MessageSid", "SM123"), ("AccountSid", "AC1"), ("To", "+14155550100")]
    nid = "01KB0000000000000000000000"
    delivered = parse_twilio([*base, ("MessageStatus", "delivered")], nid, 5)
    assert delivered.status is Status.DELIVERED and delivered.undeliverable is None and delivered.event_id == "SM123:delivered"
    assert parse_twilio([*base, ("MessageStatus", "queued")], nid, 5).status is None
    stop = parse_twilio([*base, ("MessageStatus", "undelivered"), ("ErrorCode", "21610")], nid, 5)
    assert stop.status is Status.FAILED and stop.undeliverable is not None and stop.address == "+14155550100"
    busy = parse_twilio([*base, ("MessageStatus", "undelivered"), ("ErrorCode", "30003")], nid, 5)
    assert busy.status is Status.FAILED and busy.undeliverable is None
    for form, field in (([("MessageStatus", "sent")], "MessageSid"), ([("MessageSid", "SM1")], "MessageStatus"),
                        ([("MessageSid", "SM1"), ("MessageStatus", "exploded")], "MessageStatus"),
                        ([("MessageSid", "SM/1"), ("MessageStatus", "sent")], "MessageSid"),
                        ([("MessageSid", "SM1"), ("MessageStatus", "failed"), ("ErrorCode", "x")], "ErrorCode")):
        with pytest.raises(Malformed) as bad:
            parse_twilio(form, nid, 5)
        assert bad.value.field == field
    with pytest.raises(Malformed):
        parse_twilio([*base, ("MessageStatus", "sent")], "not-an-id", 5)


def test_sendgrid_parse_is_deterministic_and_names_fields() -> None:
    event = {"event": "delivered", "timestamp": 1_700_000_000, "sg_event_id": "ev1", "sg_message_id": "abc.filter1",
             "email": "a@example.org", "herald_notification_id": "01KB0000000000000000000000"}
    [one] = parse_sendgrid(json.dumps([event]).encode())
    [two] = parse_sendgrid(json.dumps([event]).encode())
    assert one == two and one.message_id == "abc" and one.at_ms == 1_700_000_000_000 and one.status is Status.DELIVERED
    for body, field in ((b"{}", "body"), (b"[1]", "[0]"), (json.dumps([{**event, "event": ["x"]}]).encode(), "[0].event"),
                        (json.dumps([{**event, "sg_event_id": None}]).encode(), "[0].sg_event_id"),
                        (json.dumps([event] * 1001).encode(), "body"), (b"[" * 5000 + b"]" * 5000, "body"), (b"\xff", "body")):
        with pytest.raises(Malformed) as bad:
            parse_sendgrid(body)
        assert bad.value.field == field


class _Down:
    """A log store that cannot be reached."""

    async def statuses(self, nid: str) -> Any:
        raise PortUnavailable("log store down")


async def test_replay_memory_is_shared_and_a_failed_receipt_is_forgotten() -> None:
    hook = EventWebhook()
    state = local_state(1000)  # one State for two services: what two nodes on one Redis share
    settings = ReceiptSettings(sendgrid_keys=[load_sendgrid_key(hook.public_key)])
    event = {"event": "delivered", "timestamp": int(time.time()), "sg_event_id": "ev-1", "sg_message_id": "m.f",
             "herald_notification_id": "01KB0000000000000000000000"}
    body = json.dumps([event]).encode()
    headers = hook.headers(body)
    sig, stamp = headers["X-Twilio-Email-Event-Webhook-Signature"], headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    down = Receipts(settings, state, _Down(), None, None)  # type: ignore[arg-type]
    with pytest.raises(PortUnavailable):
        await down.sendgrid(sig, stamp, body)
    assert await state.get("receipts:event:sendgrid:ev-1") is None  # forgotten: the retry is taken

    class _Empty:
        async def statuses(self, nid: str) -> list[Any]:
            return []

        async def events(self, nid: str) -> list[Any]:
            return []

    node_a = Receipts(settings, state, _Empty(), None, None)  # type: ignore[arg-type]
    node_b = Receipts(settings, state, _Empty(), None, None)  # type: ignore[arg-type]
    counts = await node_a.sendgrid(sig, stamp, body)
    assert counts.unmatched == 1
    with pytest.raises(Refused) as refused:
        await node_b.sendgrid(sig, stamp, body)  # the other node remembers it
    assert refused.value.status == 403 and "replayed" in str(refused.value)
    resigned = hook.headers(body, int(time.time()) + 1)
    again = await node_b.sendgrid(resigned["X-Twilio-Email-Event-Webhook-Signature"],
                                  resigned["X-Twilio-Email-Event-Webhook-Timestamp"], body)
    assert again.duplicates == 1 and again.unmatched == 0
    await trio.lowlevel.checkpoint()


def test_a_marked_address_is_skipped_at_ingress_and_when_a_waiting_delivery_goes_out() -> None:
    import datetime as dt

    from actors.domain.preferences import check_at_fire, plan_channels
    from protocol.api import NotificationRequest
    from protocol.channels import Channel
    from protocol.content import Content, EmailContent, SmsContent
    from protocol.messages import Delivery
    from protocol.preferences import ContactPoints, Preferences, Profile, Undeliverable

    marks = [Undeliverable("email", "Bob@Example.org", "sendgrid: hard bounce"), Undeliverable("sms", "+14155550100", "twilio")]
    prefs = Preferences(contact=ContactPoints(email="bob@example.org", phone="+14155550199"), undeliverable=marks)
    import msgspec

    request = msgspec.convert({"user_id": "bob", "channels": ["email", "sms"],
                               "content": {"email": {"subject": "s", "text": "t"}, "sms": {"text": "t"}}}, NotificationRequest)
    plans = plan_channels(request, Profile(prefs), 0, dt.UTC)
    assert plans[Channel.EMAIL].skip is not None and "undeliverable: Bob@Example.org" in plans[Channel.EMAIL].skip
    assert plans[Channel.SMS].skip is None and plans[Channel.SMS].address == "+14155550199"  # another number: sent
    to_marked = msgspec.convert({**msgspec.to_builtins(request), "to": {"phone": "+14155550100"}}, NotificationRequest)
    assert plan_channels(to_marked, Profile(prefs), 0, dt.UTC)[Channel.SMS].skip is not None  # a `to` address too

    waiting = Delivery("01KB0000000000000000000000", "bob", Channel.EMAIL, 0, Content(email=EmailContent(subject="s", text="t")),
                       address="bob@example.org", attempt=2, from_profile=True)
    assert check_at_fire(waiting, Profile(prefs), 0, dt.UTC).skip is not None
    cleared = msgspec.structs.replace(prefs, undeliverable=[])
    assert check_at_fire(waiting, Profile(cleared), 0, dt.UTC).skip is None
    sms = Delivery("01KB0000000000000000000000", "bob", Channel.SMS, 0, Content(sms=SmsContent(text="t")), address="+14155550100",
                   attempt=2)
    assert check_at_fire(sms, Profile(prefs), 0, dt.UTC).skip is not None
