"""The Twilio client (actors/clients/twilio.py) against a local emulator of the Messages API and its errors
(tests/providers/twilio_emulator.py): one test per row of docs/providers.md's Twilio table, and the token shows nowhere."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest

from actors.clients.provider_config import Secret, TwilioProvider
from actors.clients.twilio import TwilioClient
from actors.config import ConfigError, load_config
from protocol.channels import Channel
from protocol.content import Content, SmsContent
from protocol.lifecycle import Status
from protocol.messages import Delivery, PermanentFailure, RetryLater, Sent
from tests.providers.asgi_server import Answer, serving
from tests.providers.twilio_emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, MESSAGING_SERVICE, TwilioEmulator, error
from tests.servers import free_port


def delivery(to: str = "+14155550100", text: str = "Code 1234") -> Delivery:
    return Delivery("n-1", "u1", Channel.SMS, 0, Content(sms=SmsContent(text=text)), address=to)


def client(url: str, token: str = AUTH_TOKEN, **settings: object) -> TwilioClient:
    values: dict[str, object] = {"from_number": FROM_NUMBER, "timeout_s": 10.0, **settings}
    return TwilioClient(TwilioProvider(account_sid=ACCOUNT_SID, auth_token=Secret(token), base_url=url, **values))  # type: ignore[arg-type]


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioEmulator]:
    emulator = TwilioEmulator()
    async with serving(emulator) as url:
        emulator.url = url
        yield emulator


async def test_a_message_is_sent_in_the_apis_form(twilio: TwilioEmulator) -> None:
    outcome = await client(twilio.url).send(delivery())
    assert isinstance(outcome, Sent) and outcome.status is Status.SENT and "201 SM" in outcome.detail, outcome
    assert twilio.accepted == [{"To": "+14155550100", "From": FROM_NUMBER, "Body": "Code 1234"}]


async def test_a_messaging_service_sends_in_place_of_a_number(twilio: TwilioEmulator) -> None:
    outcome = await client(twilio.url, from_number="", messaging_service_sid=MESSAGING_SERVICE).send(delivery())
    assert isinstance(outcome, Sent), outcome
    assert twilio.accepted == [{"To": "+14155550100", "MessagingServiceSid": MESSAGING_SERVICE, "Body": "Code 1234"}]


async def test_an_invalid_number_fails_for_good(twilio: TwilioEmulator) -> None:
    outcome = await client(twilio.url).send(delivery(to="555-0100"))
    assert isinstance(outcome, PermanentFailure) and not outcome.dead_letter and "400 21211" in outcome.error, outcome


@pytest.mark.parametrize(("answer", "verdict", "text"), [
    (error(400, 21610, "Attempt to send to unsubscribed recipient"), PermanentFailure, "400 21610"),
    (error(400, 21408, "Permission to send an SMS has not been enabled for the region"), PermanentFailure, "400 21408"),
    (error(404, 20404, "The requested resource was not found"), RetryLater, "404 20404"),
    (error(500, 20500, "Internal Server Error"), RetryLater, "500 20500"),
    (Answer(503, None, {"Retry-After": "9"}), RetryLater, "503 -"),
])
async def test_each_error_gets_its_verdict(twilio: TwilioEmulator, answer: Answer, verdict: type, text: str) -> None:
    twilio.script.append(answer)
    sms = client(twilio.url)
    outcome = await sms.send(delivery())
    assert type(outcome) is verdict and text in outcome.error, outcome
    if isinstance(outcome, RetryLater):
        assert not outcome.throttled and outcome.after_s == (9 if answer.status == 503 else None), outcome
    assert twilio.accepted == [] and isinstance(await sms.send(delivery()), Sent)  # the next one goes through


async def test_a_sender_the_account_does_not_own_is_the_providers_failure(twilio: TwilioEmulator) -> None:
    outcome = await client(twilio.url, from_number="+15005550001").send(delivery())
    assert isinstance(outcome, RetryLater) and not outcome.throttled and "400 21606" in outcome.error, outcome


async def test_a_429_is_throttled_after_its_retry_after(twilio: TwilioEmulator) -> None:
    twilio.script += [Answer(429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {"Retry-After": "3"}),
                      error(429, 20429, "Too Many Requests")]
    sms = client(twilio.url)
    first, second = await sms.send(delivery()), await sms.send(delivery())
    assert isinstance(first, RetryLater) and first.throttled and first.after_s == 3 and "429 20429" in first.error, first
    assert isinstance(second, RetryLater) and second.throttled and second.after_s == 1.0, second  # no Retry-After: a moment


async def test_a_wrong_token_is_the_providers_failure_and_never_shown(twilio: TwilioEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "twilio-Wrong-Token-Also-Secret-7"
    outcome = await client(twilio.url, wrong).send(delivery())
    assert isinstance(outcome, RetryLater) and "401 20003" in outcome.error, outcome
    for secret in (wrong, AUTH_TOKEN):
        assert secret not in outcome.error and secret not in caplog.text and secret not in repr(client(twilio.url, wrong).settings)


async def test_a_slow_api_times_out_and_an_unreachable_one_is_retried(twilio: TwilioEmulator) -> None:
    twilio.script.append(Answer(201, {"sid": "SMslow"}, delay_s=2))
    outcome = await client(twilio.url, timeout_s=0.2).send(delivery())
    assert isinstance(outcome, RetryLater) and "timed out" in outcome.error, outcome
    outcome = await client(f"http://127.0.0.1:{free_port()}").send(delivery())
    assert isinstance(outcome, RetryLater) and "ConnectError" in outcome.error, outcome


async def test_an_answer_trickled_a_byte_at_a_time_is_cut_off_at_the_calls_deadline(twilio: TwilioEmulator) -> None:
    twilio.script.append(Answer(500, raw=b"x" * 40, drip_s=0.05))  # 2 s in all, each byte well within the read timeout
    outcome = await client(twilio.url, timeout_s=0.3).send(delivery())
    assert isinstance(outcome, RetryLater) and "timed out" in outcome.error, outcome  # at 2 x 0.3 s, not after 2 s


async def test_a_huge_error_answer_is_read_only_up_to_the_limit(twilio: TwilioEmulator) -> None:
    twilio.script.append(Answer(500, raw=b"x" * (8 * 1024 * 1024)))
    outcome = await client(twilio.url).send(delivery())
    assert isinstance(outcome, RetryLater) and len(outcome.error) < 300, outcome


def test_the_config_takes_the_token_from_a_file_and_names_bad_settings(tmp_path) -> None:
    secret = tmp_path / "twilio-token"
    secret.write_text(AUTH_TOKEN + "\n")
    table = {"type": "twilio", "account_sid": ACCOUNT_SID, "from_number": FROM_NUMBER, "auth_token_file": str(secret)}
    [spec] = load_config(env={"HERALD_PROVIDERS": json.dumps({"sms": [table]})}).providers_of(Channel.SMS)
    assert isinstance(spec, TwilioProvider) and spec.auth_token.reveal() == AUTH_TOKEN and AUTH_TOKEN not in repr(spec)
    for bad, named in [
        ({**table, "from_number": "0800 555"}, "providers.sms[0].from_number: expected an E.164 number"),
        ({**table, "messaging_service_sid": MESSAGING_SERVICE}, "give from_number (E.164) or messaging_service_sid"),
        ({k: v for k, v in table.items() if k != "auth_token_file"}, "providers.sms[0].auth_token_env: required"),
        ({k: v for k, v in table.items() if k != "account_sid"}, "providers.sms[0].account_sid: required"),
        ({**table, "auth_token": AUTH_TOKEN}, "providers.sms[0].auth_token: a secret is not written in the config"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_config(env={"HERALD_PROVIDERS": json.dumps({"sms": [bad]})})
        assert named in str(caught.value) and AUTH_TOKEN not in str(caught.value), caught.value
