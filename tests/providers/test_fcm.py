"""The FCM HTTP v1 client (actors/clients/fcm.py) against a local emulator of FCM and Google's token endpoint, over HTTP/2
with TLS (tests/providers/fcm_emulator.py): one test per row of docs/providers.md's FCM table, the access token's
life (fetched once for concurrent sends, refreshed before expiry, dropped on a 401), and the key shown nowhere."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.clients.fcm import REFRESH_MARGIN_S, FcmClient
from actors.clients.provider_config import FcmProvider, Secret
from actors.config import ConfigError, load_config
from protocol.channels import Channel, Priority
from protocol.content import Content, PushContent
from protocol.lifecycle import Status
from protocol.messages import Delivery, PermanentFailure, RetryLater, Sent
from tests.providers.asgi_server import Answer, Tls, make_tls, serving
from tests.providers.fcm_emulator import CLIENT_EMAIL, PRIVATE_KEY_PEM, PROJECT, FcmEmulator, fcm_error, service_account

TOKEN = "fcm-device-token-A:APA91b" + "x" * 100
OTHER = "fcm-device-token-B:APA91b" + "y" * 100


def delivery(*tokens: str, priority: Priority = Priority.NORMAL, nid: str = "n-1") -> Delivery:
    content = Content(push=PushContent(title="Your code", body="1234", data={"kind": "otp"}))
    listed = list(tokens or (TOKEN,))
    return Delivery(nid, "u1", Channel.PUSH, 0, content, address=listed[0], addresses=listed if len(listed) > 1 else [],
                    priority=priority)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
async def fcm(tls: Tls) -> AsyncIterator[FcmEmulator]:
    emulator = FcmEmulator()
    async with serving(emulator, tls) as url:
        emulator.url = url
        yield emulator


def spec(fcm: FcmEmulator, tls: Tls, key_pem: str = PRIVATE_KEY_PEM, **settings: object) -> FcmProvider:
    values: dict[str, object] = {"timeout_s": 10.0, "ca_file": tls.ca_file, **settings}
    return FcmProvider(client_email=CLIENT_EMAIL, private_key=Secret(key_pem), project_id=PROJECT, private_key_id="k1",
                       token_url=fcm.token_url, base_url=fcm.url, **values)  # type: ignore[arg-type]


async def test_a_message_goes_over_http2_in_the_v1_form(fcm: FcmEmulator, tls: Tls) -> None:
    push = FcmClient(spec(fcm, tls))
    outcome = await push.send(delivery(priority=Priority.CRITICAL, nid="n-crit"))
    assert isinstance(outcome, Sent) and outcome.status is Status.SENT and f"projects/{PROJECT}/messages/1" in outcome.detail, outcome
    assert isinstance(await push.send(delivery(priority=Priority.LOW, nid="n-low")), Sent)
    urgent, low = fcm.accepted
    assert urgent["token"] == TOKEN and urgent["notification"] == {"title": "Your code", "body": "1234"}
    assert urgent["data"] == {"kind": "otp", "herald_notification_id": "n-crit"}
    assert urgent["android"] == {"priority": "HIGH", "ttl": "86400s", "collapse_key": "n-crit"}
    assert urgent["apns"]["headers"]["apns-priority"] == "10" and urgent["apns"]["headers"]["apns-collapse-id"] == "n-crit"
    assert low["android"]["priority"] == "NORMAL" and low["apns"]["headers"]["apns-priority"] == "5"
    assert fcm.versions == ["2", "2"]  # HTTP/2, negotiated by ALPN over TLS with the configured CA
    claims = fcm.assertions[0]
    assert claims["iss"] == CLIENT_EMAIL and claims["aud"] == fcm.token_url and claims["exp"] - claims["iat"] == 3600
    assert len(fcm.issued) == 1  # the access token is cached


async def test_an_unregistered_token_is_a_permanent_failure_that_removes_it(fcm: FcmEmulator, tls: Tls) -> None:
    fcm.unregistered.add(TOKEN)
    outcome = await FcmClient(spec(fcm, tls)).send(delivery())
    assert isinstance(outcome, PermanentFailure) and outcome.unregistered_tokens == [TOKEN], outcome
    assert "404 UNREGISTERED" in outcome.error and not outcome.dead_letter


async def test_of_two_devices_one_gone_the_delivery_is_sent_and_the_gone_one_removed(fcm: FcmEmulator, tls: Tls) -> None:
    fcm.unregistered.add(OTHER)
    outcome = await FcmClient(spec(fcm, tls)).send(delivery(TOKEN, OTHER))
    assert isinstance(outcome, Sent) and outcome.unregistered_tokens == [OTHER] and "1 of 2 device(s)" in outcome.detail, outcome
    assert [m["token"] for m in fcm.accepted] == [TOKEN]


@pytest.mark.parametrize(("answer", "verdict", "text"), [
    (fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT"),
     PermanentFailure, "400 INVALID_ARGUMENT"),
    (fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"), PermanentFailure, "403 SENDER_ID_MISMATCH"),
    (fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE", Retry_After="11"), RetryLater,
     "503 UNAVAILABLE"),
    (fcm_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL"), RetryLater, "500 INTERNAL"),
    (fcm_error(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"), RetryLater,
     "401 THIRD_PARTY_AUTH_ERROR"),
])
async def test_each_error_gets_its_verdict(fcm: FcmEmulator, tls: Tls, answer: Answer, verdict: type, text: str) -> None:
    fcm.script.append(answer)
    push = FcmClient(spec(fcm, tls))
    outcome = await push.send(delivery())
    assert type(outcome) is verdict and text in outcome.error and outcome.unregistered_tokens == [], outcome
    if isinstance(outcome, RetryLater):
        assert not outcome.throttled and outcome.after_s == (11 if answer.status == 503 else None), outcome
    assert isinstance(await push.send(delivery()), Sent)  # the next one goes through


async def test_quota_exceeded_is_throttled_for_its_retry_after_or_a_minute(fcm: FcmEmulator, tls: Tls) -> None:
    fcm.script += [fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED", Retry_After="17"),
                   fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED")]
    push = FcmClient(spec(fcm, tls))
    first, second = await push.send(delivery()), await push.send(delivery())
    assert isinstance(first, RetryLater) and first.throttled and first.after_s == 17 and "429 QUOTA_EXCEEDED" in first.error, first
    assert isinstance(second, RetryLater) and second.throttled and second.after_s == 60, second


async def test_concurrent_sends_share_one_token_fetch_over_http2(fcm: FcmEmulator, tls: Tls) -> None:
    push = FcmClient(spec(fcm, tls))
    outcomes: list[object] = []

    async def one(n: int) -> None:
        outcomes.append(await push.send(delivery(f"{TOKEN}-{n}", nid=f"n-{n}")))

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(one, n)
    assert len(outcomes) == 20 and all(isinstance(o, Sent) for o in outcomes), outcomes
    assert len(fcm.issued) == 1 and set(fcm.versions) == {"2"} and len(fcm.versions) == 20


async def test_the_access_token_is_refreshed_before_it_expires(fcm: FcmEmulator, tls: Tls) -> None:
    fcm.expires_in = int(REFRESH_MARGIN_S) + 1  # valid for 301 s: replaced 1 s after it was asked for
    push = FcmClient(spec(fcm, tls))
    assert isinstance(await push.send(delivery()), Sent) and isinstance(await push.send(delivery()), Sent)
    assert len(fcm.issued) == 1
    await trio.sleep(1.1)
    assert isinstance(await push.send(delivery()), Sent)
    assert len(fcm.issued) == 2  # a new one, while the old one was still valid for about 5 minutes


async def test_a_revoked_access_token_is_dropped_and_the_next_send_fetches_another(fcm: FcmEmulator, tls: Tls) -> None:
    push = FcmClient(spec(fcm, tls))
    assert isinstance(await push.send(delivery()), Sent)
    fcm.issued.clear()  # the token endpoint revoked it
    outcome = await push.send(delivery())
    assert isinstance(outcome, RetryLater) and "401 UNAUTHENTICATED" in outcome.error, outcome
    assert isinstance(await push.send(delivery()), Sent) and len(fcm.issued) == 1


async def test_a_key_the_token_endpoint_refuses_is_the_providers_failure_and_never_shown(
    fcm: FcmEmulator, tls: Tls, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    push = FcmClient(spec(fcm, tls, key_pem=other))
    outcome = await push.send(delivery())
    assert isinstance(outcome, RetryLater) and "access token: 400 invalid_grant" in outcome.error, outcome
    assert fcm.sends == 0 and fcm.issued == []
    good = FcmClient(spec(fcm, tls))
    assert isinstance(await good.send(delivery()), Sent)
    body = other.splitlines()[1]  # a line of the key's base64
    for text in (outcome.error, caplog.text, repr(push.settings), str(push.settings)):
        assert body not in text and PRIVATE_KEY_PEM.splitlines()[1] not in text and fcm.issued[0] not in text


async def test_an_untrusted_certificate_is_refused(fcm: FcmEmulator, tls: Tls, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other_ca = make_tls(tmp_path / "other").ca_file
    outcome = await FcmClient(spec(fcm, tls, ca_file=other_ca)).send(delivery())
    assert isinstance(outcome, RetryLater) and "ConnectError" in outcome.error and fcm.issued == [], outcome


def test_the_config_reads_the_service_account_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "service-account.json"
    key_file.write_text(service_account("https://oauth2.example/token"))
    table = {"type": "fcm", "credentials_file": str(key_file)}
    [fcm] = load_config(env={"HERALD_PROVIDERS": json.dumps({"push": [table]})}).providers_of(Channel.PUSH)
    assert isinstance(fcm, FcmProvider) and (fcm.project_id, fcm.client_email, fcm.token_url) == (
        PROJECT, CLIENT_EMAIL, "https://oauth2.example/token")
    assert fcm.private_key.reveal() == PRIVATE_KEY_PEM and PRIVATE_KEY_PEM.splitlines()[1] not in repr(fcm)
    not_a_key = tmp_path / "not-a-key.json"
    not_a_key.write_text(json.dumps({"type": "service_account", "client_email": "x@y", "private_key": "Top-Secret-Not-PEM"}))
    for bad, named in [
        ({"type": "fcm"}, "providers.push[0].credentials_env: required"),
        ({"type": "fcm", "credentials_file": str(not_a_key)}, "providers.push[0].credentials.private_key: expected a PEM private key"),
        ({**table, "ttl_s": 40 * 86_400}, "providers.push[0].ttl_s: expected at most"),
        ({**table, "base_url": "fcm.googleapis.com"}, "providers.push[0].base_url: expected an http(s) URL"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_config(env={"HERALD_PROVIDERS": json.dumps({"push": [bad]})})
        assert named in str(caught.value) and "Top-Secret-Not-PEM" not in str(caught.value), caught.value
    with pytest.raises(ConfigError) as caught:
        load_config(env={"HERALD_PROVIDERS": json.dumps({"push": [{"type": "fcm", "credentials_env": "SA"}]}),
                         "SA": "{not json, Top-Secret"})
    assert "expected a service account's JSON key file" in str(caught.value) and "Top-Secret" not in str(caught.value)
