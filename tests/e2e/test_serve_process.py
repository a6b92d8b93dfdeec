"""`herald serve` as a real process: the whole journey, SIGTERM, and kill -9 losing nothing."""

import email
import email.policy
import json
import random
import signal

import httpx
import pytest
import trio

from actors.clients.call_log import count_call_logs
from actors.config import Config
from tests.helpers import all_channels, open_websocket_url, receive_json, wait_final, ws_url
from tests.process import herald_process

pytestmark = pytest.mark.slow


def client_for(server):
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=15)


async def test_post_reaches_websocket_outbox_and_every_status_is_final(tmp_path):
    async with herald_process(tmp_path / "data") as server, client_for(server) as client:
        token = (await client.post("/v1/users/alice/tokens", json={"ttl_s": 600})).json()["token"]
        async with open_websocket_url(ws_url(server.url, token)) as ws:
            await ws.send_message(json.dumps({"type": "sync"}))
            assert (await receive_json(ws))["type"] == "synced"
            response = await client.post("/v1/notifications", json=all_channels("alice"))
            assert response.status_code == 202, response.text
            nid = response.json()["notification_id"]
            with trio.fail_after(10):
                frame = await receive_json(ws)
            assert frame["id"] == nid and frame["url"] == "https://example.invalid/x"
            await ws.send_message(json.dumps({"type": "ack", "id": nid}))
            status = await wait_final(client, nid, web="delivered")
        assert {c: s["status"] for c, s in status["channels"].items()} == dict.fromkeys(["email", "sms", "push", "web"], "delivered")
        message = email.message_from_bytes((tmp_path / "data" / "outbox" / f"{nid}.eml").read_bytes(), policy=email.policy.default)
        assert message["To"] == "alice@example.org"
        assert message["Message-ID"] and message["Date"]
        assert message.get_body(("plain",)).get_content().strip() == "Code 1234"
        history = (await client.get("/v1/users/alice/notifications")).json()
        assert {item["channel"] for item in history["items"]} == {"email", "sms", "push", "web"}


async def test_sigterm_drains_and_exits_cleanly(tmp_path):
    async with herald_process(tmp_path / "data") as server, client_for(server) as client:
        response = await client.post("/v1/notifications", json=all_channels("bob"))
        assert response.status_code == 202
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            code = await server.process.wait()
        assert code == 0, "\n".join(server.output)
    async with herald_process(tmp_path / "data") as server, client_for(server) as client:
        # everything accepted before SIGTERM was delivered and recorded before the exit
        body = (await client.get(f"/v1/notifications/{response.json()['notification_id']}")).json()
        assert {c: body["channels"][c]["status"] for c in ("email", "sms", "push")} == dict.fromkeys(["email", "sms", "push"], "delivered")


async def test_kill_9_after_202s_loses_nothing(tmp_path):
    """Post N notifications concurrently, kill -9 right after the last 202, restart: all delivered.

    Duplicates are counted where they happen, in the node's call log: the send ledger stops
    the redelivery of what was sent, so a provider call beyond one per delivery can only be
    one of the calls each provider had between their start and their ledger write at the
    kill: at most provider_max_in_flight per channel (docs/reliability.md).
    """
    total, users = 300, [f"user{i}" for i in range(10)]
    accepted: dict[str, str] = {}
    data = tmp_path / "data"
    async with herald_process(data) as server, client_for(server) as client:
        order = random.Random(7)

        async def poster(n: int) -> None:
            for i in range(n, total, 16):
                user = order.choice(users)
                response = await client.post("/v1/notifications", json=all_channels(user))
                assert response.status_code == 202, response.text
                accepted[response.json()["notification_id"]] = user

        async with trio.open_nursery() as nursery:
            for n in range(16):
                nursery.start_soon(poster, n)
        server.kill9()  # the pipeline is still mid-flight
        await server.process.wait()
    assert len(accepted) == total
    async with herald_process(data) as server, client_for(server) as client:
        with trio.fail_after(60):
            for nid in accepted:
                while True:
                    body = (await client.get(f"/v1/notifications/{nid}")).json()
                    states = {c: s["status"] for c, s in body.get("channels", {}).items()}
                    if all(states.get(c) == "delivered" for c in ("email", "sms", "push")) and states.get("web") in ("queued", "sent"):
                        break
                    await trio.sleep(0.05)
        # web: every user's inbox holds every one of their notifications
        for user in users:
            token = (await client.post(f"/v1/users/{user}/tokens", json={})).json()["token"]
            async with open_websocket_url(ws_url(server.url, token)) as ws:
                await ws.send_message(json.dumps({"type": "sync"}))
                got = set()
                with trio.fail_after(20):
                    while True:
                        frame = await receive_json(ws)
                        if frame["type"] == "synced":
                            break
                        got.add(frame["id"])
            assert got == {nid for nid, u in accepted.items() if u == user}
    emails = {p.stem for p in (data / "outbox").glob("*.eml")}
    sms = [json.loads(line)["notification_id"] for line in (data / "sms.jsonl").read_text().splitlines()]
    lost = set(accepted) - emails
    calls = count_call_logs(data)
    duplicates = {channel: c.duplicates for channel, c in calls.items()}
    print(f"kill -9: sent={total} delivered={total - len(lost)} lost={len(lost)} "
          f"provider_calls={sum(c.calls for c in calls.values())} provider_duplicates={sum(duplicates.values())} {duplicates}")
    assert not lost
    assert set(sms) == set(accepted)
    for channel, counts in calls.items():
        # one kill: at most max_in_flight calls per provider between their start and their ledger write
        assert counts.deliveries == total and counts.duplicates <= Config().provider_max_in_flight[channel], (channel, counts)


async def test_an_idempotency_key_is_remembered_across_kill_9(tmp_path):
    body = all_channels("carol")
    async with herald_process(tmp_path / "data") as server, client_for(server) as client:
        first = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "order-42"})
        assert first.status_code == 202
        server.kill9()
        await server.process.wait()
    async with herald_process(tmp_path / "data") as server, client_for(server) as client:
        again = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "order-42"})
        assert again.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["notification_id"] == first.json()["notification_id"]
