"""A whole node whose webhook channel is configured as an operator would (HERALD_PROVIDERS, the secret in an env var):
a user's contact webhook gets the signed POST (verified by the standardwebhooks package), retried after a 503 with the
same webhook-id; an endpoint that answers 410 Gone leaves the user's preferences; a URL the guard refuses fails the
channel without a request; a bad URL in `to` is a 422 naming to.webhook. The secret shows nowhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio
from standardwebhooks import Webhook

from tests.providers.asgi_server import Answer, serving
from tests.providers.email_node import email_node
from tests.providers.test_push_sms_node import final
from tests.providers.test_webhook import KEY, SECRET
from tests.providers.webhook_receiver import Receiver


def notification(user: str = "bob", **extra: object) -> dict[str, object]:
    return {"user_id": user, "channels": ["webhook"], "category": "deploys",
            "content": {"webhook": {"title": "Deployed", "body": "build 42", "data": {"build": "42"}}}, **extra}


async def test_a_users_webhook_gets_signed_posts_retries_keep_the_id_and_410_removes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = Receiver()
    async with serving(receiver) as url:
        hook = url + "/hooks/bob"
        providers = {"webhook": [{"type": "webhook", "secret_env": "TEST_HOOK_SECRET", "allow_cidrs": ["127.0.0.1/32"],
                                  "timeout_s": 5}]}
        async with email_node(tmp_path, providers, {"TEST_HOOK_SECRET": SECRET}) as http:
            put = await http.put("/v1/users/bob/preferences", json={"contact": {"webhook": hook}})
            assert put.status_code == 200, put.text

            receiver.script.append(Answer(503, {"error": "deploying"}))  # the first attempt fails; the retry is sent
            response = await http.post("/v1/notifications", json=notification())
            assert response.status_code == 202, response.text
            nid = response.json()["notification_id"]
            status = await final(http, nid, ("webhook",))
            assert status["channels"]["webhook"]["status"] == "sent", status
            assert [r.headers["webhook-id"] for r in receiver.received] == [nid, nid]
            body = Webhook(SECRET).verify(receiver.received[1].body, receiver.received[1].headers)
            assert body["type"] == "notification" and body["data"]["notification_id"] == nid
            assert body["data"]["title"] == "Deployed" and body["data"]["data"] == {"build": "42"}

            receiver.script.append(Answer(410, {"error": "this hook was deleted"}))
            gone = (await http.post("/v1/notifications", json=notification())).json()["notification_id"]
            status = await final(http, gone, ("webhook",))
            assert status["channels"]["webhook"]["status"] == "failed" and "410" in json.dumps(status), status
            prefs = (await http.get("/v1/users/bob/preferences")).json()
            assert "webhook" not in prefs["contact"], prefs  # the endpoint is disabled: no more POSTs to it
            after = await http.post("/v1/notifications", json=notification())
            assert after.status_code == 422 and after.json()["errors"][0]["field"] == "to.webhook", after.text

            bad = await http.post("/v1/notifications", json=notification(to={"webhook": "gopher://127.0.0.1/x"}))
            assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["to.webhook"], bad.text

            metrics = (await http.get("/metrics")).text
            assert 'channel="webhook"' in metrics
        assert len(receiver.received) == 3
        for text in (metrics, caplog.text, json.dumps(status)):
            assert SECRET not in text and SECRET[6:] not in text and KEY.hex() not in text


async def test_a_node_refuses_a_url_to_its_own_loopback_unless_allowed(tmp_path: Path) -> None:
    receiver = Receiver()
    async with serving(receiver) as url:
        providers = {"webhook": [{"type": "webhook", "secret_env": "TEST_HOOK_SECRET"}]}  # no allow_cidrs: public only
        async with email_node(tmp_path, providers, {"TEST_HOOK_SECRET": SECRET}) as http:
            response = await http.post("/v1/notifications", json=notification(to={"webhook": url + "/admin"}))
            assert response.status_code == 202, response.text
            status = await final(http, response.json()["notification_id"], ("webhook",))
    channel = status["channels"]["webhook"]
    assert channel["status"] == "failed" and "127.0.0.1 is loopback" in json.dumps(status), status
    assert receiver.received == []


async def test_a_templates_webhook_part_is_rendered_into_the_post(tmp_path: Path) -> None:
    receiver = Receiver()
    async with serving(receiver) as url:
        providers = {"webhook": [{"type": "webhook", "secret_env": "TEST_HOOK_SECRET", "allow_cidrs": ["127.0.0.0/8"]}]}
        async with email_node(tmp_path, providers, {"TEST_HOOK_SECRET": SECRET}) as http:
            template = {"locales": {"en": {"webhook": {"title": "Build {{build}} {{state}}",
                                                         "body": "{{#notes}}- {{.}}\n{{/notes}}", "data": {"build": "{{build}}"}}}}}
            created = await http.post("/v1/templates/deploy", json=template)
            assert created.status_code == 201, created.text
            sent = await http.post("/v1/notifications", json={
                "user_id": "ci", "channels": ["webhook"], "template_id": "deploy", "to": {"webhook": url + "/ci"},
                "data": {"build": 7, "state": "passed", "notes": ["fast", "green"]},
            })
            assert sent.status_code == 202, sent.text
            status = await final(http, sent.json()["notification_id"], ("webhook",))
    assert status["channels"]["webhook"]["status"] == "sent", status
    [got] = receiver.received
    body = Webhook(SECRET).verify(got.body, got.headers)["data"]
    assert (body["title"], body["body"], body["data"]) == ("Build 7 passed", "- fast\n- green\n", {"build": "7"})


class Down(Receiver):
    """An endpoint whose server is broken: every request answered 503."""

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes, http_version: str) -> Answer:
        super().answer(method, path, headers, body, http_version)
        return Answer(503, {"error": "down"})


async def test_one_users_dead_endpoint_holds_back_no_one_elses_webhooks(tmp_path: Path) -> None:
    """Twelve notifications to a user whose endpoint answers 503 to everything: its own breaker opens after
    `endpoint_failure_threshold` calls, and its later attempts are not called; the channel's breaker stays closed, so
    another user's webhook goes out at once (with one breaker for the channel, it waited out the open timeout)."""
    down, up = Down(), Receiver()
    async with serving(down) as down_url, serving(up) as up_url:
        providers = {"webhook": [{"type": "webhook", "secret_env": "TEST_HOOK_SECRET", "allow_cidrs": ["127.0.0.1/32"],
                                  "timeout_s": 5, "endpoint_failure_threshold": 3, "endpoint_open_timeout_s": 600}]}
        async with email_node(tmp_path, providers, {"TEST_HOOK_SECRET": SECRET}, max_attempts=3) as http:
            dead = []
            for n in range(12):
                sent = await http.post("/v1/notifications", json=notification("alice", to={"webhook": f"{down_url}/a/{n}"}))
                assert sent.status_code == 202, sent.text
                dead.append(sent.json()["notification_id"])
            for nid in dead:
                with trio.fail_after(30):
                    while (await http.get(f"/v1/notifications/{nid}")).json()["channels"]["webhook"]["status"] not in (
                            "failed", "dead_lettered"):
                        await trio.sleep(0.05)
            circuits = (await http.get("/v1/admin/circuits")).json()
            [webhook] = [c for c in circuits["circuits"] if c["channel"] == "webhook"]
            assert webhook["state"] == "closed" and webhook["consecutive_failures"] == 0, webhook
            sent = await http.post("/v1/notifications", json=notification("bob", to={"webhook": up_url + "/b"}))
            with trio.fail_after(10):  # the channel's open timeout (30 s by default) would be past this
                status = await final(http, sent.json()["notification_id"], ("webhook",))
            assert status["channels"]["webhook"]["status"] == "sent", status
    assert len(down.received) == 3  # the breaker's threshold; the other 33 attempts were not called
    assert len(up.received) == 1
