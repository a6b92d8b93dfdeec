"""The APNs client (actors/clients/apns.py) against a local emulator of Apple's provider API over HTTP/2 with TLS
(tests/providers/apns_emulator.py): the headers from the notification's priority and content, one test per row of
docs/providers.md's APNs table, the provider token's life, and the key shown nowhere."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.clients.apns import _NAMESPACE, ApnsClient, ProviderToken, apns_id
from actors.clients.provider_config import ApnsProvider, Secret
from actors.config import ConfigError, load_config
from protocol.channels import Channel, Priority
from protocol.content import Content, PushContent
from protocol.lifecycle import Status
from protocol.messages import Delivery, PermanentFailure, RetryLater, Sent
from reactor.clock import wall_ms
from tests.providers.apns_emulator import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, ApnsEmulator, reason
from tests.providers.asgi_server import Answer, Tls, make_tls, serving

TOKEN = "a1" * 32
OTHER = "b2" * 32


def delivery(*tokens: str, priority: Priority = Priority.NORMAL, nid: str = "n-1", data: dict[str, str] | None = None) -> Delivery:
    content = Content(push=PushContent(title="Your code", body="1234", data=data or {"kind": "otp"}))
    listed = list(tokens or (TOKEN,))
    return Delivery(nid, "u1", Channel.PUSH, 0, content, address=listed[0], addresses=listed if len(listed) > 1 else [],
                    priority=priority)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
async def apns(tls: Tls) -> AsyncIterator[ApnsEmulator]:
    emulator = ApnsEmulator()
    async with serving(emulator, tls) as url:
        emulator.url = url
        yield emulator


def spec(url: str, tls: Tls | None, key_pem: str = KEY_PEM, **settings: object) -> ApnsProvider:
    values: dict[str, object] = {"timeout_s": 10.0, "ca_file": tls.ca_file if tls else None, **settings}
    return ApnsProvider(key=Secret(key_pem), key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC, base_url=url, **values)  # type: ignore[arg-type]


async def test_the_headers_follow_the_notifications_priority_and_content(apns: ApnsEmulator, tls: Tls) -> None:
    push = ApnsClient(spec(apns.url, tls, ttl_s=3600))
    before = wall_ms() // 1000
    for nid, priority in (("n-crit", Priority.CRITICAL), ("n-high", Priority.HIGH), ("n-normal", Priority.NORMAL),
                          ("n-low", Priority.LOW)):
        outcome = await push.send(delivery(priority=priority, nid=nid))
        assert isinstance(outcome, Sent) and outcome.status is Status.SENT and "apns-id" in outcome.detail, outcome
    after = wall_ms() // 1000
    assert [h["apns-priority"] for _, h, _ in apns.accepted] == ["10", "10", "5", "5"]
    token, headers, payload = apns.accepted[0]
    assert token == TOKEN and headers["apns-topic"] == TOPIC and headers["apns-push-type"] == "alert"
    assert headers["apns-collapse-id"] == "n-crit" and uuid.UUID(headers["apns-id"])
    assert before + 3600 <= int(headers["apns-expiration"]) <= after + 3600
    assert payload == {"aps": {"alert": {"title": "Your code", "body": "1234"}}, "kind": "otp", "herald_notification_id": "n-crit"}
    assert set(apns.versions) == {"2"} and len(apns.provider_tokens) == 1  # HTTP/2; one provider token for all four


async def test_bad_device_token_and_unregistered_remove_the_token(apns: ApnsEmulator, tls: Tls) -> None:
    push = ApnsClient(spec(apns.url, tls))
    short = "c3" * 20  # hex, but not the 32 bytes Apple's tokens are
    outcome = await push.send(delivery(short))
    assert isinstance(outcome, PermanentFailure) and outcome.unregistered_tokens == [short] and "400 BadDeviceToken" in outcome.error
    apns.unregistered[TOKEN] = 1_700_000_000_000
    outcome = await push.send(delivery(TOKEN, OTHER))
    assert isinstance(outcome, Sent) and outcome.unregistered_tokens == [TOKEN], outcome
    assert "410 Unregistered (since 1700000000000)" in outcome.detail and [t for t, _, _ in apns.accepted] == [OTHER]


@pytest.mark.parametrize(("answer", "verdict", "text"), [
    (reason(400, "DeviceTokenNotForTopic"), PermanentFailure, "400 DeviceTokenNotForTopic"),
    (reason(400, "BadCollapseId"), PermanentFailure, "400 BadCollapseId"),
    (reason(403, "InvalidProviderToken"), RetryLater, "403 InvalidProviderToken"),
    (reason(500, "InternalServerError"), RetryLater, "500 InternalServerError"),
    (reason(503, "ServiceUnavailable", Retry_After="13"), RetryLater, "503 ServiceUnavailable"),
])
async def test_each_error_gets_its_verdict(apns: ApnsEmulator, tls: Tls, answer: Answer, verdict: type, text: str) -> None:
    apns.script.append(answer)
    push = ApnsClient(spec(apns.url, tls))
    outcome = await push.send(delivery())
    assert type(outcome) is verdict and text in outcome.error and outcome.unregistered_tokens == [], outcome
    if isinstance(outcome, RetryLater):
        assert not outcome.throttled and outcome.after_s == (13 if answer.status == 503 else None), outcome
    assert isinstance(await push.send(delivery()), Sent)


async def test_a_payload_too_large_fails_for_good(apns: ApnsEmulator, tls: Tls) -> None:
    outcome = await ApnsClient(spec(apns.url, tls)).send(delivery(data={"blob": "x" * 5000}))
    assert isinstance(outcome, PermanentFailure) and "413 PayloadTooLarge" in outcome.error, outcome


async def test_too_many_requests_to_a_device_is_throttled_without_holding_the_provider(apns: ApnsEmulator, tls: Tls) -> None:
    apns.script.append(reason(429, "TooManyRequests"))
    outcome = await ApnsClient(spec(apns.url, tls)).send(delivery())
    assert isinstance(outcome, RetryLater) and outcome.throttled and outcome.after_s is None, outcome  # the consumer's backoff


async def test_an_expired_provider_token_is_made_again_and_the_send_repeated_once(apns: ApnsEmulator, tls: Tls) -> None:
    push = ApnsClient(spec(apns.url, tls))
    apns.script.append(reason(403, "ExpiredProviderToken"))
    outcome = await push.send(delivery())
    assert isinstance(outcome, Sent) and push.token.made == 2 and len(apns.provider_tokens) == 2, outcome
    apns.script += [reason(403, "ExpiredProviderToken"), reason(403, "ExpiredProviderToken")]
    outcome = await push.send(delivery())
    assert isinstance(outcome, RetryLater) and "403 ExpiredProviderToken" in outcome.error and push.token.made == 3, outcome


async def test_the_emulator_refuses_a_token_older_than_an_hour_and_the_client_renews_it(apns: ApnsEmulator, tls: Tls) -> None:
    push = ApnsClient(spec(apns.url, tls))
    assert isinstance(await push.send(delivery()), Sent)
    apns.not_before = wall_ms() // 1000 + 3600  # every token made before now is an hour old, to Apple
    outcome = await push.send(delivery())
    assert isinstance(outcome, RetryLater) and "403 ExpiredProviderToken" in outcome.error, outcome


async def test_the_provider_token_is_kept_for_token_refresh_s_then_made_again(autojump_clock: trio.testing.MockClock) -> None:
    token = ProviderToken(spec("https://apns.invalid", None, token_refresh_s=2400.0))
    first = token.get()
    await trio.sleep(2399)
    assert token.get() == first and token.made == 1
    await trio.sleep(1)
    assert token.get() != first and token.made == 2


async def test_a_key_apns_refuses_is_the_providers_failure_and_never_shown(
    apns: ApnsEmulator, tls: Tls, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    push = ApnsClient(spec(apns.url, tls, key_pem=other))
    outcome = await push.send(delivery())
    assert isinstance(outcome, RetryLater) and "403 InvalidProviderToken" in outcome.error, outcome
    good = ApnsClient(spec(apns.url, tls))
    assert isinstance(await good.send(delivery()), Sent)
    for text in (outcome.error, caplog.text, repr(push.settings)):
        assert other.splitlines()[1] not in text and KEY_PEM.splitlines()[1] not in text and apns.provider_tokens[0] not in text


async def test_a_token_that_is_not_hex_is_refused_before_any_request(apns: ApnsEmulator, tls: Tls) -> None:
    outcome = await ApnsClient(spec(apns.url, tls)).send(delivery("../../3/device/" + TOKEN))
    assert isinstance(outcome, PermanentFailure) and outcome.unregistered_tokens == [] and apns.versions == [], outcome


def test_the_config_reads_the_p8_key_and_checks_the_refresh_window(tmp_path: Path) -> None:
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_text(KEY_PEM)
    table = {"type": "apns", "key_file": str(key_file), "key_id": KEY_ID, "team_id": TEAM_ID, "topic": TOPIC}
    [spec_] = load_config(env={"HERALD_PROVIDERS": json.dumps({"push": [table]})}).providers_of(Channel.PUSH)
    assert isinstance(spec_, ApnsProvider) and spec_.key.reveal() == KEY_PEM.rstrip("\n") and spec_.token_refresh_s == 2400
    assert spec_.base_url == "https://api.push.apple.com" and KEY_PEM.splitlines()[1] not in repr(spec_)
    rsa_key = tmp_path / "rsa.pem"
    from tests.providers.fcm_emulator import PRIVATE_KEY_PEM

    rsa_key.write_text(PRIVATE_KEY_PEM)
    for bad, named in [
        ({**table, "token_refresh_s": 600}, "providers.push[0].token_refresh_s: expected 1200 to 3599"),
        ({**table, "token_refresh_s": 3600}, "providers.push[0].token_refresh_s: expected 1200 to 3599"),
        ({**table, "key_file": str(rsa_key)}, "providers.push[0].key: expected a PEM private key (EC P-256"),
        ({k: v for k, v in table.items() if k != "topic"}, "providers.push[0].topic: required"),
        ({**table, "key": "inline"}, "providers.push[0].key: a secret is not written in the config"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_config(env={"HERALD_PROVIDERS": json.dumps({"push": [bad]})})
        assert named in str(caught.value) and PRIVATE_KEY_PEM.splitlines()[1] not in str(caught.value), caught.value


@given(st.text(max_size=80))
def test_the_apns_id_is_the_uuid5_of_the_notification_id(notification_id: str) -> None:
    assert apns_id(notification_id) == str(uuid.uuid5(_NAMESPACE, notification_id))
