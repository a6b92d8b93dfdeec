"""The SendGrid client (actors/clients/sendgrid.py) against a local emulator of its v3 Mail Send API and its errors
(tests/providers/sendgrid_emulator.py): each answer gives its mapped verdict, and the key shows nowhere."""

from __future__ import annotations

import json
import logging

import pytest

from actors.clients.provider_config import SendgridProvider, Secret
from actors.clients.sendgrid import SendgridClient
from actors.config import load_config
from protocol.channels import Channel
from protocol.content import Content, EmailContent
from protocol.lifecycle import Status
from protocol.messages import Delivery, PermanentFailure, RetryLater, Sent
from reactor.clock import wall_ms
from tests.providers.email_node import email_node, send_until_sent
from tests.providers.sendgrid_emulator import API_KEY, Answer, error, running_emulator
from tests.servers import free_port

SENDER = "Herald <herald@example.org>"


def delivery(to: str = "alice@example.org", **extra: object) -> Delivery:
    content = Content(email=EmailContent(subject="Your code", text="Code 1234", html="<p>Code <b>1234</b></p>"))
    return Delivery("n-1", "u1", Channel.EMAIL, 0, content, address=to, **extra)  # type: ignore[arg-type]


def client(url: str, key: str = API_KEY) -> SendgridClient:
    return SendgridClient(SendgridProvider(api_key=Secret(key), base_url=url, timeout_s=10.0), SENDER)


async def test_a_message_is_accepted_in_the_apis_form() -> None:
    async with running_emulator() as emulator:
        outcome = await client(emulator.url).send(delivery(unsubscribe_url="https://h.example/u?t=1"))
        assert isinstance(outcome, Sent) and outcome.status is Status.SENT and "X-Message-Id" in outcome.detail, outcome
        [body] = emulator.accepted
        assert body["personalizations"] == [{"to": [{"email": "alice@example.org"}]}]
        assert body["from"] == {"email": "herald@example.org", "name": "Herald"} and body["subject"] == "Your code"
        assert body["content"] == [{"type": "text/plain", "value": "Code 1234"}, {"type": "text/html", "value": "<p>Code <b>1234</b></p>"}]
        assert body["custom_args"] == {"herald_notification_id": "n-1"}
        assert body["headers"]["List-Unsubscribe"] == "<https://h.example/u?t=1>"


@pytest.mark.parametrize(("answer", "verdict", "text"), [
    (error("Does not contain a valid address.", "personalizations.0.to"), PermanentFailure, "400: personalizations.0.to: Does not contain"),
    (error("Payload Too Large", None, 413), PermanentFailure, "413"),
    (Answer(500, {"errors": [{"message": "Internal error", "field": None}]}), RetryLater, "500: -: Internal error"),
    (Answer(503, None), RetryLater, "503"),
    (error("access forbidden", None, 403), RetryLater, "403"),
])
async def test_each_error_gets_its_verdict(answer: Answer, verdict: type, text: str) -> None:
    async with running_emulator() as emulator:
        emulator.script.append(answer)
        sendgrid = client(emulator.url)
        outcome = await sendgrid.send(delivery())
        assert isinstance(outcome, verdict) and text in outcome.error, outcome
        assert not isinstance(outcome, RetryLater) or not outcome.throttled  # a failure the breaker counts
        assert emulator.accepted == []
        assert isinstance(await sendgrid.send(delivery()), Sent)  # the next one goes through


async def test_a_429_is_retried_after_the_rate_limit_reset() -> None:
    async with running_emulator() as emulator:
        reset = wall_ms() // 1000 + 30
        emulator.script.append(Answer(429, {"errors": [{"message": "too many requests"}]}, {"X-RateLimit-Reset": str(reset)}))
        outcome = await client(emulator.url).send(delivery())
        assert isinstance(outcome, RetryLater) and outcome.throttled and outcome.after_s is not None and 25 <= outcome.after_s <= 31, outcome
        emulator.script.append(Answer(429, None, {"Retry-After": "7"}))
        outcome = await client(emulator.url).send(delivery())
        assert isinstance(outcome, RetryLater) and outcome.throttled and outcome.after_s == 7, outcome


async def test_a_wrong_key_is_the_providers_failure_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "SG.wrong-Key-Also-Secret-456"
    async with running_emulator() as emulator:
        outcome = await client(emulator.url, wrong).send(delivery())
        assert isinstance(outcome, RetryLater) and "401" in outcome.error, outcome
        assert wrong not in outcome.error and wrong not in caplog.text and emulator.accepted == []


async def test_an_unreachable_api_is_retried_later() -> None:
    outcome = await client(f"http://127.0.0.1:{free_port()}").send(delivery())
    assert isinstance(outcome, RetryLater), outcome


async def test_an_unsafe_header_is_dead_lettered_before_any_request() -> None:
    async with running_emulator() as emulator:
        outcome = await client(emulator.url).send(delivery(to="alice@example.org\r\nBcc: x@example.org"))
        assert isinstance(outcome, PermanentFailure) and outcome.dead_letter, outcome
        assert emulator.requests == 0


def test_the_key_comes_from_the_environment_and_is_required() -> None:
    value = json.dumps({"email": [{"type": "sendgrid", "api_key_env": "SENDGRID_KEY"}]})
    [spec] = load_config(env={"HERALD_PROVIDERS": value, "SENDGRID_KEY": API_KEY}).providers_of(Channel.EMAIL)
    assert isinstance(spec, SendgridProvider) and spec.api_key.reveal() == API_KEY and API_KEY not in repr(spec)
    from actors.config import ConfigError

    with pytest.raises(ConfigError, match=r"providers.email\[0\].api_key_env: required"):
        load_config(env={"HERALD_PROVIDERS": json.dumps({"email": [{"type": "sendgrid"}]})})


async def test_a_node_sends_through_sendgrid_after_a_503(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_emulator() as emulator:
        emulator.script.append(Answer(503, None))
        providers = {"email": [{"type": "sendgrid", "base_url": emulator.url, "api_key_env": "TEST_SENDGRID_KEY", "timeout_s": 10}]}
        async with email_node(tmp_path, providers, {"TEST_SENDGRID_KEY": API_KEY}) as http:
            nid, status = await send_until_sent(http)
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
        [sent] = emulator.accepted
        assert sent["custom_args"] == {"herald_notification_id": nid} and emulator.requests == 2
        assert "503" in json.dumps(status["channels"]["email"]), status
        for text in (json.dumps(status), metrics.text, caplog.text):
            assert API_KEY not in text
