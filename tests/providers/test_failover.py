"""Failover (actors/clients/failover.py): a channel with two providers sends through the second while the first is down,
and through the first again once its breaker closes; each delivery once, whichever provider sent it. The fault test
prints its counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.clients.failover import FailoverClient, Member
from actors.config import ConfigError, load_config
from actors.services.gate import Limits, ResilienceGate
from protocol.channels import Channel
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent
from reactor.backends.embedded import MemoryState
from reactor.circuit_breaker import BreakerConfig
from tests.providers.asgi_server import serving
from tests.providers.email_node import email_node
from tests.providers.twilio_emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioEmulator

THRESHOLD, OPEN_S, IN_FLIGHT = 3, 1.0, 4
LIMITS = {"capacity": 1000, "refill_per_s": 1000, "failure_threshold": THRESHOLD, "open_timeout_s": OPEN_S, "success_threshold": 1}


def twilio(url: str) -> dict[str, Any]:
    return {"type": "twilio", "account_sid": ACCOUNT_SID, "auth_token_env": "TEST_TWILIO_TOKEN", "from_number": FROM_NUMBER,
            "base_url": url, "timeout_s": 10}


async def send_all(http: Any, first: int, count: int) -> list[str]:
    nids = []
    for n in range(first, first + count):
        response = await http.post("/v1/notifications", json={
            "user_id": f"u{n}", "channels": ["sms"], "to": {"phone": "+14155550100"}, "content": {"sms": {"text": f"msg {n}"}}})
        assert response.status_code == 202, response.text
        nids.append(response.json()["notification_id"])
    return nids


async def all_sent(http: Any, nids: list[str]) -> list[dict[str, Any]]:
    statuses = []
    with trio.fail_after(60):
        for nid in nids:
            while (status := (await http.get(f"/v1/notifications/{nid}")).json())["channels"]["sms"]["status"] != "sent":
                assert status["channels"]["sms"]["status"] not in ("failed", "dead_lettered"), status
                await trio.sleep(0.05)
            statuses.append(status)
    return statuses


async def test_primary_down_then_back_nothing_lost_nothing_twice(tmp_path: Path) -> None:
    primary, secondary = TwilioEmulator(), TwilioEmulator()
    async with serving(primary) as primary.url, serving(secondary) as secondary.url:
        primary.down = True
        settings = {"limits": {"sms": LIMITS}, "provider_max_in_flight": {"sms": IN_FLIGHT}}
        async with email_node(tmp_path, {"sms": [twilio(primary.url), twilio(secondary.url)]}, {"TEST_TWILIO_TOKEN": AUTH_TOKEN},
                              **settings) as http:
            down = await all_sent(http, await send_all(http, 0, 30))
            tried_while_down = primary.requests
            circuits = (await http.get("/v1/admin/circuits")).json()
            metrics = (await http.get("/metrics")).text
            primary.down = False  # back: after its breaker's open timeout, a probe finds it and closes it
            await trio.sleep(OPEN_S)
            back = await all_sent(http, await send_all(http, 30, 30))
        sent = [m["Body"] for m in primary.accepted + secondary.accepted]
        print(f"\nfailover: {len(sent)} sent of 60 ({len(set(sent))} distinct); primary down: {tried_while_down} requests "
              f"(503), secondary sent {len(secondary.accepted)}; primary back: sent {len(primary.accepted)}")
        assert sorted(sent) == sorted(f"msg {n}" for n in range(60))  # nothing lost, nothing twice
        assert tried_while_down <= THRESHOLD + IN_FLIGHT  # one breaker trip, then passed over
        [sms] = [c for c in circuits["circuits"] if c["channel"] == "sms"]
        assert sms["state"] == "open" and sms["transitions"] == {"twilio-1:closed->open": 1}, sms  # the primary's breaker
        assert 'herald_provider_breaker_state{channel="sms",state="open"} 1.0' in metrics
        assert {m["Body"] for m in primary.accepted} <= {f"msg {n}" for n in range(30, 60)}  # none while it was down
        assert len(primary.accepted) >= 30 - IN_FLIGHT  # back once its breaker closed (the probe's companions: the secondary)
        assert all("via twilio-2: twilio: 201" in json.dumps(s["channels"]["sms"]["attempts"]) for s in down), down[0]  # who sent each
        assert sum("via twilio-1: twilio: 201" in json.dumps(s["channels"]["sms"]["attempts"]) for s in back) == len(primary.accepted)


class Answers:
    def __init__(self, *answers: Outcome) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def send(self, d: Delivery) -> Outcome:
        self.calls += 1
        return self.answers.pop(0) if self.answers else Sent(detail="ok")


def failover(*clients: Answers) -> FailoverClient:
    state = MemoryState()
    limits = Limits(100, 100, BreakerConfig(failure_threshold=2, open_timeout_s=60, success_threshold=1))
    return FailoverClient("sms", [Member(f"p{n + 1}", c, ResilienceGate(f"sms.p{n + 1}", limits, state)) for n, c in enumerate(clients)],
                          max_pause_s=10)


def sms(nid: str = "n-1") -> Delivery:
    return Delivery(nid, "u1", Channel.SMS, 0, Content(sms=SmsContent("hi")), address="+15555550100")


@pytest.mark.parametrize(("first", "fails_over"), [
    (RetryLater("p1: 503"), True),
    (RetryLater("p1: 429", after_s=30, throttled=True), True),  # throttled beyond the wait
    (RetryLater("p1: 429", after_s=None, throttled=True), True),
    (RetryLater("p1: 429", after_s=2, throttled=True), False),  # within the wait: the Provider waits and sends it again
    (PermanentFailure("p1: 400 21211 invalid number"), False),  # the content's fault is the same everywhere
])
async def test_what_fails_over(autojump_clock, first: Outcome, fails_over: bool) -> None:
    one, two = Answers(first), Answers()
    outcome = await failover(one, two).send(sms())
    assert two.calls == (1 if fails_over else 0), outcome
    if fails_over:
        assert isinstance(outcome, Sent) and outcome.detail.startswith("via p2: ok (before: p1: p1: "), outcome
    else:
        assert type(outcome) is type(first) and outcome.error.startswith("via p1: "), outcome  # type: ignore[union-attr]


async def test_an_open_breaker_is_passed_over_without_a_call_and_the_last_provider_waits(autojump_clock) -> None:
    one, two = Answers(*[RetryLater("p1: 503")] * 2), Answers(*[RetryLater("p2: 503")] * 4)
    client = failover(one, two)
    for nid in ("a", "b"):  # p1's second failure opens its breaker; p2 (the last) answers 503 too
        assert isinstance(await client.send(sms(nid)), RetryLater)
    outcome = await client.send(sms("c"))
    assert one.calls == 2 and isinstance(outcome, RetryLater), outcome
    assert outcome.error == "via p2: p2: 503 (before: p1: passed over (breaker open or throttled))", outcome
    assert client.counts() == {"p1": {"sent": 0, "passed": 1, "failed_over": 2}, "p2": {"sent": 0, "passed": 0, "failed_over": 0}}
    assert trio.current_time() >= 60 and two.calls == 3  # p2's breaker opened too: the last provider was waited for, not passed
    outcome = await client.send(sms("d"))  # p1's open timeout has run out: its half-open probe, which succeeds
    assert isinstance(outcome, Sent) and outcome.detail == "via p1: ok" and one.calls == 3, outcome


def test_more_than_four_providers_are_refused_and_names_are_numbered() -> None:
    from actors.clients.provider_config import provider_names

    many = {"sms": [{"type": "sandbox"}] * 5}
    with pytest.raises(ConfigError, match="at most 4 providers per channel"):
        load_config(env={"HERALD_PROVIDERS": json.dumps(many)})
    specs = load_config(env={"HERALD_PROVIDERS": json.dumps({"sms": [{"type": "sandbox"}] * 2})}).providers_of(Channel.SMS)
    assert provider_names(specs) == ["sandbox-1", "sandbox-2"]
