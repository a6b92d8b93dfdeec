"""One node in-process on a free loopback port: the whole journey of a notification."""

import email
import email.policy
import json

import pytest
import trio

from tests.helpers import all_channels, http, open_websocket_url, receive_json, running_node, token_for, wait_final, web_notification, ws_url


async def test_all_channels_reach_their_final_status(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        token = await token_for(client, "u1")
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            await ws.send_message(json.dumps({"type": "sync"}))
            assert await receive_json(ws) == {"type": "synced", "count": 0}
            response = await client.post("/v1/notifications", json=all_channels("u1"))
            assert response.status_code == 202, response.text
            nid = response.json()["notification_id"]
            assert response.headers["location"] == f"/v1/notifications/{nid}"
            frame = await receive_json(ws)
            assert frame["type"] == "notification" and frame["id"] == nid and frame["title"] == "Code"
            await ws.send_message(json.dumps({"type": "ack", "id": nid}))
            status = await wait_final(client, nid, web="delivered")
        assert {ch: s["status"] for ch, s in status["channels"].items()} == {
            "email": "delivered", "sms": "delivered", "push": "delivered", "web": "delivered",
        }
        timeline = [a["status"] for a in status["channels"]["email"]["attempts"]]
        assert timeline == ["accepted", "queued", "sent", "delivered"]
        eml = herald.config.outbox_dir / f"{nid}.eml"
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message["To"] == "u1@example.org" and message["Subject"] == "Your code"
        assert message.get_body(("plain",)).get_content().strip() == "Code 1234"
        assert "<b>1234</b>" in message.get_body(("html",)).get_content()
        sms = [json.loads(line) for line in (herald.config.data_dir / "sms.jsonl").read_text().splitlines()]
        assert sms == [{**sms[0], "notification_id": nid, "to": "+15555550100", "text": "Code 1234"}]


async def test_sync_after_reconnect_replays_only_what_was_missed(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        token = await token_for(client, "u2")
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            await ws.send_message(json.dumps({"type": "sync"}))
            await receive_json(ws)
            first = (await client.post("/v1/notifications", json=web_notification("u2", "one"))).json()["notification_id"]
            assert (await receive_json(ws))["id"] == first
        missed = []
        for title in ("two", "three"):
            response = await client.post("/v1/notifications", json=web_notification("u2", title))
            missed.append(response.json()["notification_id"])
        with trio.fail_after(5):  # kept in the inbox while nobody is connected
            while len(await herald.logstore.inbox_after("u2", first)) < 2:
                await trio.sleep(0.02)
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            await ws.send_message(json.dumps({"type": "sync", "last_id": first}))
            frames = [await receive_json(ws) for _ in range(3)]
        assert [f.get("id") for f in frames[:2]] == missed
        assert frames[2] == {"type": "synced", "count": 2}


async def test_websocket_refuses_bad_tokens_and_answers_pings(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        async with open_websocket_url(ws_url(herald.url, "forged.token")) as ws:
            with trio.fail_after(5):
                try:
                    await ws.get_message()
                except Exception as exc:  # ConnectionClosed
                    assert exc.reason.code == 4100
        token = await token_for(client, "u3")
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            await ws.send_message(json.dumps({"type": "ping"}))
            assert await receive_json(ws) == {"type": "pong"}
            await ws.send_message("not json")
            assert (await receive_json(ws))["type"] == "error"
            await ws.send_message(json.dumps({"type": "ack", "id": "01J0000000000000000000000A"}))
            assert (await receive_json(ws))["type"] == "error"  # not sent on this session: refused


async def test_history_is_newest_first_with_cursor_and_filters(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        ids = []
        for i in range(5):
            response = await client.post("/v1/notifications", json=web_notification("u4", f"n{i}"))
            ids.append(response.json()["notification_id"])
        seen = []
        cursor = None
        while True:
            params = {"limit": 2, "channel": "web"}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/users/u4/notifications", params=params)).json()
            seen += [item["notification_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))
        empty = (await client.get("/v1/users/u4/notifications", params={"channel": "email"})).json()
        assert empty == {"items": [], "next_cursor": None}
        bad = await client.get("/v1/users/u4/notifications", params={"cursor": "!!"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "cursor"


async def test_requests_without_the_api_key_are_refused(tmp_path):
    async with running_node(tmp_path) as herald, http(herald, key="wrong") as client:
        response = await client.post("/v1/notifications", json=web_notification())
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_shutdown_stops_every_stage_in_reverse_order(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        await client.post("/v1/notifications", json=web_notification("u5"))
    assert herald.system.shutdown_log == ["front", "metrics", "ingress", "consumers", "delivery", "recording", "storage"]
    # the storage stage, stopped last, closed the backends it opened
    with pytest.raises(RuntimeError, match="not open"):
        await herald.store.get_meta("anything")
    with pytest.raises(Exception, match="stopped"):
        await herald.bus.produce([("web", b"k", b"v")])


async def test_server_closes_a_session_after_three_missed_heartbeats(tmp_path):
    async with running_node(tmp_path, heartbeat_s=0.1) as herald, http(herald) as client:
        token = await token_for(client, "u6")
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            start = trio.current_time()
            with trio.fail_after(5):
                try:
                    while True:
                        await ws.get_message()
                except Exception as exc:  # ConnectionClosed
                    assert exc.reason.code == 4000
            assert trio.current_time() - start >= 0.3


async def test_pings_keep_a_session_alive(tmp_path):
    async with running_node(tmp_path, heartbeat_s=0.1) as herald, http(herald) as client:
        token = await token_for(client, "u7")
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            for _ in range(10):  # 1 s: ten heartbeat periods
                await ws.send_message(json.dumps({"type": "ping"}))
                assert await receive_json(ws) == {"type": "pong"}
                await trio.sleep(0.1)
            nid = (await client.post("/v1/notifications", json=web_notification("u7"))).json()["notification_id"]
            assert (await receive_json(ws))["id"] == nid


class CrashOn:
    """A channel client with a bug that some messages trigger: it raises on every call for `user`."""

    def __init__(self, user: str, times: int = 1_000_000):
        self.user = user
        self.times = times
        self.calls: dict[str, int] = {}

    async def send(self, delivery):
        from protocol.messages import Sent

        calls = self.calls[delivery.user_id] = self.calls.get(delivery.user_id, 0) + 1
        if delivery.user_id == self.user and calls <= self.times:
            raise RuntimeError("client bug")
        return Sent()


async def test_a_message_that_crashes_the_client_twice_is_dead_lettered_and_nothing_restarts(tmp_path):
    from protocol.channels import Channel
    from reactor.ports import DlqFilter

    client_impl = CrashOn("u8")
    async with running_node(tmp_path, clients={Channel.SMS: client_impl}, partitions={"email": 1, "sms": 1, "push": 1, "web": 1}) as herald, http(herald) as client:
        body = {"user_id": "u8", "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}
        poison = (await client.post("/v1/notifications", json=body)).json()["notification_id"]
        after = (await client.post("/v1/notifications", json={**body, "user_id": "u9"})).json()["notification_id"]
        assert (await wait_final(client, after))["channels"]["sms"]["status"] == "delivered"
        assert (await wait_final(client, poison))["channels"]["sms"]["status"] == "dead_lettered"
        assert client_impl.calls == {"u8": 2, "u9": 1}  # retried once, then dead-lettered as poison
        restarts = {c.name: c.restarts for s in herald.system.supervisors() for c in s.statistics()}
        assert sum(restarts.values()) == 0, restarts
        [entry] = await herald.store.dead_letters(DlqFilter(channel="sms"))
        assert entry.notification_id == poison and "crashed twice" in entry.error and "client bug" in entry.error
        print(f"poison: sent=2 delivered=1 dead_lettered=1 lost=0 restarts=0 calls={client_impl.calls}")


async def test_a_message_that_crashes_the_client_once_is_retried_and_delivered(tmp_path):
    from protocol.channels import Channel

    client_impl = CrashOn("u10", times=1)
    async with running_node(tmp_path, clients={Channel.SMS: client_impl}) as herald, http(herald) as client:
        body = {"user_id": "u10", "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}
        nid = (await client.post("/v1/notifications", json=body)).json()["notification_id"]
        status = await wait_final(client, nid)
        assert status["channels"]["sms"]["status"] == "delivered"
        assert any("client bug" in a.get("detail", "") for a in status["channels"]["sms"]["attempts"])
        assert client_impl.calls == {"u10": 2} and await herald.store.dead_letter_count() == 0
