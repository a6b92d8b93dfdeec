"""Whole nodes configured as an operator would (HERALD_PROVIDERS, secrets in env vars): SMS through the Twilio emulator
(a 429 honoured in place), push through the FCM or the APNs emulator over HTTP/2, where a device the provider calls
unregistered is removed from the user's devices (the UserStore) and the others get the notification. No secret shows
in the logs, the statuses or /metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.providers.apns_emulator import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, ApnsEmulator
from tests.providers.asgi_server import Answer, make_tls, serving
from tests.providers.email_node import email_node
from tests.providers.fcm_emulator import PRIVATE_KEY_PEM, FcmEmulator, service_account
from tests.providers.twilio_emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioEmulator


async def final(http: Any, nid: str, channels: tuple[str, ...]) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            status = (await http.get(f"/v1/notifications/{nid}")).json()
            if all(status["channels"].get(c, {}).get("status") in ("sent", "failed", "dead_lettered") for c in channels):
                return status
            await trio.sleep(0.05)


@pytest.mark.parametrize("push_type", ["fcm", "apns"])
async def test_sms_and_push_through_real_clients_and_a_gone_device_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, push_type: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    tls = make_tls(tmp_path)
    twilio, fcm, apns = TwilioEmulator(), FcmEmulator(), ApnsEmulator()
    live, gone = ("phone-1:APA91b" + "x" * 60, "tablet-2:APA91b" + "y" * 60) if push_type == "fcm" else ("a1" * 32, "b2" * 32)
    async with serving(twilio) as twilio.url, serving(fcm, tls) as fcm.url, serving(apns, tls) as apns.url:
        twilio.script.append(Answer(429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {"Retry-After": "0.2"}))
        fcm.unregistered.add(gone)
        apns.unregistered[gone] = 1_700_000_000_000
        push: dict[str, Any] = (
            {"type": "fcm", "credentials_env": "TEST_FCM_ACCOUNT", "base_url": fcm.url, "ca_file": str(tls.ca_file)}
            if push_type == "fcm" else
            {"type": "apns", "key_env": "TEST_APNS_KEY", "key_id": KEY_ID, "team_id": TEAM_ID, "topic": TOPIC,
             "base_url": apns.url, "ca_file": str(tls.ca_file)}
        )
        providers = {"sms": [{"type": "twilio", "account_sid": ACCOUNT_SID, "auth_token_env": "TEST_TWILIO_TOKEN",
                              "from_number": FROM_NUMBER, "base_url": twilio.url, "timeout_s": 10}],
                     "push": [push]}
        secrets = {"TEST_TWILIO_TOKEN": AUTH_TOKEN, "TEST_FCM_ACCOUNT": service_account(fcm.token_url), "TEST_APNS_KEY": KEY_PEM}
        async with email_node(tmp_path, providers, secrets) as http:
            await http.put("/v1/users/bob/preferences", json={"contact": {"phone": "+14155550100"}})
            for token in (live, gone):
                created = await http.post("/v1/users/bob/devices", json={"platform": push_type, "token": token})
                assert created.status_code == 201, created.text
            response = await http.post("/v1/notifications", json={
                "user_id": "bob", "channels": ["sms", "push"], "priority": "high",
                "content": {"sms": {"text": "Code 1234"}, "push": {"title": "Your code", "body": "1234"}},
            })
            assert response.status_code == 202, response.text
            nid = response.json()["notification_id"]
            status = await final(http, nid, ("sms", "push"))
            devices = (await http.get("/v1/users/bob/devices")).json()["items"]
            metrics = (await http.get("/metrics")).text
        assert status["channels"]["sms"]["status"] == "sent" and status["channels"]["push"]["status"] == "sent", status
        assert [d["token"] for d in devices] == [live]  # the gone one removed through the UserStore
        assert [m["Body"] for m in twilio.accepted] == ["Code 1234"] and twilio.requests == 2  # the 429, then sent in place
        if push_type == "fcm":
            assert [m["token"] for m in fcm.accepted] == [live] and fcm.accepted[0]["android"]["priority"] == "HIGH"
            assert fcm.accepted[0]["data"]["herald_notification_id"] == nid
            leaked = [PRIVATE_KEY_PEM.splitlines()[1], *fcm.issued]
        else:
            [(token, headers, _)] = apns.accepted
            assert token == live and headers["apns-priority"] == "10" and headers["apns-collapse-id"] == nid
            leaked = [KEY_PEM.splitlines()[1], *apns.provider_tokens]
        for text in (json.dumps(status), metrics, caplog.text):
            for secret in (AUTH_TOKEN, *leaked):
                assert secret not in text
