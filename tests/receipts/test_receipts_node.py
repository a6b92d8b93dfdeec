"""Delivery receipts on whole nodes: the SendGrid and Twilio emulators post signed receipts (a key pair and an auth
token made for the test) to a node that sent through them. A forged, unsigned, stale or replayed receipt is refused
and changes nothing; a genuine one moves the status (GET /v1/notifications/{id}); the same event again adds nothing;
a hard bounce marks the address undeliverable and the next send to it is skipped, until the mark is cleared."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.providers.asgi_server import serving
from tests.providers.email_node import email_node
from tests.providers.sendgrid_emulator import API_KEY, EventWebhook, running_emulator
from tests.providers.twilio_emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioEmulator

EMAIL = {"user_id": "bob", "channels": ["email"], "content": {"email": {"subject": "Your code", "text": "Code 1234"}}}
SMS = {"user_id": "bob", "channels": ["sms"], "content": {"sms": {"text": "Code 1234"}}}


async def settled(http: httpx.AsyncClient, nid: str, channel: str, wanted: tuple[str, ...] = ("sent", "failed")) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            status = (await http.get(f"/v1/notifications/{nid}")).json()
            if status["channels"].get(channel, {}).get("status") in wanted:
                return dict(status["channels"][channel])
            await trio.sleep(0.05)


async def send(http: httpx.AsyncClient, request: dict[str, Any]) -> str:
    response = await http.post("/v1/notifications", json=request)
    assert response.status_code == 202, response.text
    return str(response.json()["notification_id"])


async def test_sendgrid_receipts_signed_refused_recorded_and_a_bounce_marks_the_address(tmp_path: Path) -> None:
    async with running_emulator() as sendgrid:
        providers = {"email": [{"type": "sendgrid", "api_key_env": "TEST_SG_KEY", "webhook_key_env": "TEST_SG_WEBHOOK",
                                "base_url": sendgrid.url, "timeout_s": 10}]}
        secrets = {"TEST_SG_KEY": API_KEY, "TEST_SG_WEBHOOK": sendgrid.webhook.public_key}
        async with email_node(tmp_path, providers, secrets) as http:
            hook = str(http.base_url).rstrip("/") + "/v1/webhooks/sendgrid"
            assert (await http.put("/v1/users/bob/preferences", json={"contact": {"email": "bob@example.org"}})).status_code == 200
            nid = await send(http, EMAIL)
            before = await settled(http, nid, "email")
            no_twilio = await http.post("/v1/webhooks/twilio", data={"MessageSid": "SM1"}, headers={"X-Twilio-Signature": "x"})
            assert no_twilio.status_code == 404 and "no twilio provider" in no_twilio.json()["detail"], no_twilio.text
            assert before["status"] == "sent"
            delivered = [sendgrid.event(0, "delivered", response="250 OK")]
            assert delivered[0]["herald_notification_id"] == nid  # the custom arg Herald put in the request

            # refused: unsigned, signed by another key, a body changed after signing, stale; nothing recorded
            body = json.dumps(delivered).encode()
            unsigned = await http.post(hook, content=body, headers={"Content-Type": "application/json"})
            assert unsigned.status_code == 401 and unsigned.headers["content-type"] == "application/problem+json", unsigned.text
            forged = await EventWebhook().post(hook, delivered)
            assert forged.status_code == 403 and "badly signed" in forged.json()["detail"], forged.text
            headers = sendgrid.webhook.headers(body)
            tampered = body.replace(b"delivered", b"open\x20\x20\x20\x20\x20")
            assert (await http.post(hook, content=tampered, headers=headers)).status_code == 403
            stale = await sendgrid.webhook.post(hook, delivered, timestamp=int(time.time()) - 600)
            assert stale.status_code == 403 and "stale" in stale.json()["detail"], stale.text
            assert stale.json()["errors"][0]["field"] == "X-Twilio-Email-Event-Webhook-Timestamp"
            assert unsigned.json()["errors"][0]["field"] == "X-Twilio-Email-Event-Webhook-Signature"
            assert unsigned.headers["WWW-Authenticate"] == 'Signature realm="sendgrid"'
            assert (await settled(http, nid, "email"))["attempts"] == before["attempts"]

            # genuine: recorded through the Recorder, the status moves
            taken = await http.post(hook, content=body, headers=headers)
            assert taken.status_code == 200 and taken.json()["recorded"] == 1, taken.text
            after = await settled(http, nid, "email", ("delivered",))
            assert after["final"] and any("receipt: sendgrid delivered" in a.get("detail", "") for a in after["attempts"]), after

            # replayed: the same signature again is refused; the same event signed anew is skipped; nothing changes
            replay = await http.post(hook, content=body, headers=headers)
            assert replay.status_code == 403 and "replayed" in replay.json()["detail"], replay.text
            again = await sendgrid.webhook.post(hook, delivered, timestamp=int(time.time()) + 1)
            assert again.status_code == 200 and again.json()["duplicates"] == 1 and again.json()["recorded"] == 0, again.text
            assert (await settled(http, nid, "email", ("delivered",)))["attempts"] == after["attempts"]

            opened = await sendgrid.webhook.post(hook, [sendgrid.event(0, "open"), sendgrid.event(0, "processed")])
            assert opened.json() == {"recorded": 1, "duplicates": 0, "unmatched": 0, "ignored": 1, "marked": 0}, opened.text
            assert (await settled(http, nid, "email", ("opened",)))["status"] == "opened"

            # a receipt naming a message Herald did not send with that id, or no Herald notification: skipped
            other = dict(sendgrid.event(0, "delivered"), sg_message_id="someone-else.filter")
            foreign = {k: v for k, v in sendgrid.event(0, "delivered").items() if k != "herald_notification_id"}
            skipped = await sendgrid.webhook.post(hook, [other, foreign])
            assert skipped.status_code == 200 and skipped.json()["unmatched"] == 2, skipped.text

            # malformed signed bodies: a 422 naming what is wrong, never a 500
            for events, field in (({"event": "delivered"}, "body"), ([{"timestamp": 1}], "[0].event"),
                                  ([{"event": "open", "timestamp": "x", "sg_event_id": "e"}], "[0].timestamp"),
                                  ([dict(sendgrid.event(0, "open"), herald_notification_id="../etc")], "[0].herald_notification_id")):
                bad = await sendgrid.webhook.post(hook, events)  # type: ignore[arg-type]
                assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == field, (events, bad.text)
            raw = b"[{not json"
            bad = await http.post(hook, content=raw, headers=sendgrid.webhook.headers(raw))
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body", bad.text
            big = b"[" + b" " * (1024 * 1024) + b"]"
            assert (await http.post(hook, content=big, headers=sendgrid.webhook.headers(big))).status_code == 413

            # a hard bounce: failed, and the address marked undeliverable in the user's preferences
            bounced_nid = await send(http, EMAIL)
            await settled(http, bounced_nid, "email")
            bounce = sendgrid.event(1, "bounce", type="bounce", reason="550 5.1.1 The email account does not exist")
            taken = await sendgrid.webhook.post(hook, [bounce])
            assert taken.json()["marked"] == 1 and taken.json()["recorded"] == 1, taken.text
            failed = await settled(http, bounced_nid, "email", ("failed",))
            assert "bounced: 550 5.1.1" in failed["attempts"][-1]["detail"], failed
            prefs = (await http.get("/v1/users/bob/preferences")).json()
            [mark] = prefs["undeliverable"]
            assert mark["channel"] == "email" and mark["address"] == "bob@example.org" and "hard bounce" in mark["reason"]

            # the next send to it is skipped with a reason, without a request to SendGrid
            skipped_nid = await send(http, EMAIL)
            skipped_status = await settled(http, skipped_nid, "email", ("failed",))
            assert "undeliverable: bob@example.org" in skipped_status["attempts"][-1]["detail"], skipped_status
            assert len(sendgrid.accepted) == 2

            # cleared by PUT preferences without the mark: sent again
            prefs.pop("undeliverable")
            assert (await http.put("/v1/users/bob/preferences", json=prefs)).status_code == 200
            resent = await send(http, EMAIL)
            assert (await settled(http, resent, "email"))["status"] == "sent"
            assert len(sendgrid.accepted) == 3


async def sendgrid_hook_without_key(http: httpx.AsyncClient) -> httpx.Response:
    """A well-signed SendGrid batch to a node with no sendgrid webhook_key configured."""
    body = b"[]"
    return await http.post("/v1/webhooks/sendgrid", content=body, headers=EventWebhook().headers(body))


async def test_twilio_status_callbacks_signed_over_the_public_url(tmp_path: Path) -> None:
    twilio = TwilioEmulator()
    async with serving(twilio) as twilio.url:
        providers = {"sms": [{"type": "twilio", "account_sid": ACCOUNT_SID, "auth_token_env": "TEST_TWILIO_TOKEN",
                              "from_number": FROM_NUMBER, "base_url": twilio.url, "timeout_s": 10}]}
        public = "https://herald.example.org"  # behind a proxy: Twilio is told this URL, and signs it
        async with email_node(tmp_path, providers, {"TEST_TWILIO_TOKEN": AUTH_TOKEN}, public_url=public) as http:
            assert (await http.put("/v1/users/bob/preferences", json={"contact": {"phone": "+14155550100"}})).status_code == 200
            nid = await send(http, SMS)
            before = await settled(http, nid, "sms")
            no_key = await sendgrid_hook_without_key(http)
            assert no_key.status_code == 404 and "webhook_key" in no_key.json()["detail"], no_key.text
            assert before["status"] == "sent"
            url, form, headers = twilio.callback(0, "delivered")
            assert url == f"{public}/v1/webhooks/twilio?n={nid}"  # the StatusCallback Herald gave
            here = f"/v1/webhooks/twilio?n={nid}"  # what the proxy forwards to the node

            unsigned = await http.post(here, data=form)
            assert unsigned.status_code == 401 and unsigned.json()["errors"][0]["field"] == "X-Twilio-Signature", unsigned.text
            _, _, forged = twilio.callback(0, "delivered", token="not-the-auth-token")
            assert (await http.post(here, data=form, headers=forged)).status_code == 403
            # a signature over another URL (the address the request came to, its Host) is not taken
            twilio.accepted[0]["StatusCallback"] = f"{http.base_url}".rstrip("/") + here
            _, _, wrong = twilio.callback(0, "delivered")
            twilio.accepted[0]["StatusCallback"] = url
            assert (await http.post(here, data=form, headers=wrong)).status_code == 403
            changed = dict(form, MessageStatus="failed")
            assert (await http.post(here, data=changed, headers=headers)).status_code == 403  # a parameter changed
            assert (await settled(http, nid, "sms"))["attempts"] == before["attempts"]

            taken = await http.post(here, data=form, headers=headers)
            assert taken.status_code == 200 and taken.json()["recorded"] == 1, taken.text
            assert (await settled(http, nid, "sms", ("delivered",)))["final"]
            replay = await http.post(here, data=form, headers=headers)
            assert replay.status_code == 403 and "replayed" in replay.json()["detail"], replay.text

            bad_form = await http.post(here, content=b"MessageSid=SM1", headers={**headers, "Content-Type": "application/json"})
            assert bad_form.status_code == 415, bad_form.text
            for raw in (b"\xff\xfe", b"MessageSid"):  # not UTF-8, not name=value: 422 naming the body, never a 500
                bad_form = await http.post(here, content=raw, headers=headers)
                assert bad_form.status_code == 422 and bad_form.json()["errors"][0]["field"] == "body", bad_form.text
            assert (await http.post("/v1/webhooks/twilio?x=1", data=form, headers=headers)).status_code == 400

            # undelivered 30005 (unknown handset): failed, the number marked, the next SMS skipped
            second = await send(http, SMS)
            await settled(http, second, "sms")
            _, form, headers = twilio.callback(1, "undelivered", error_code="30005")
            taken = await http.post(f"/v1/webhooks/twilio?n={second}", data=form, headers=headers)
            assert taken.json()["marked"] == 1, taken.text
            failed = await settled(http, second, "sms", ("failed",))
            assert "error 30005" in failed["attempts"][-1]["detail"], failed
            third = await send(http, SMS)
            skipped = await settled(http, third, "sms", ("failed",))
            assert "undeliverable: +14155550100" in skipped["attempts"][-1]["detail"], skipped
            assert len(twilio.accepted) == 2
