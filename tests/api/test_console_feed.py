"""GET /v1/admin/stream (the operator console's feed), the pages' headers, and ConsoleFeed's bookkeeping."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from actors.api import console_feed
from actors.api.console_feed import ConsoleFeed
from protocol.api import CircuitView
from protocol.channels import Channel
from tests.helpers import http, running_node, wait_final, web_notification


async def first_snapshot(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with client.stream("GET", "/v1/admin/stream", headers=headers or {}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                return dict(json.loads(line[6:]))
    raise AssertionError("the stream ended before a snapshot")


async def test_the_feed_shows_what_the_node_accepted_and_its_circuits(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        nid = (await client.post("/v1/notifications", json=web_notification("feed-user", "t"))).json()["notification_id"]
        await wait_final(client, nid)
        with trio.fail_after(10):
            snap = await first_snapshot(client)
        assert snap["recent"][0] == {"id": nid, "user_id": "feed-user", "channels": ["web"], "at": snap["recent"][0]["at"]}
        assert snap["accepted"]["web"] == 1 and snap["accepted"]["sms"] == 0
        assert {c["channel"] for c in snap["circuits"]} == {c.value for c in Channel}
        assert all(c["state"] == "closed" for c in snap["circuits"])
        assert set(snap["sessions"]) == {"websocket", "sse", "poll"}
        assert snap["deliveries"]["web"]["delivered"] + snap["deliveries"]["web"]["sent"] >= 1
        assert {lag["topic"] for lag in snap["lag"]} >= {"herald.web"} and set(snap["dlq"]) >= {"sms"}


async def test_the_feed_needs_an_admin_key_in_the_header(tmp_path):
    async with running_node(tmp_path) as herald, httpx.AsyncClient(base_url=herald.url, timeout=10) as client:
        _, reader = await herald.gateway.keys.create(["read", "send"], "not admin")
        assert (await client.get("/v1/admin/stream")).status_code == 401
        assert (await client.get("/v1/admin/stream", headers={"Authorization": f"Bearer {reader}"})).status_code == 403
        refused = await client.get("/v1/admin/stream", params={"key": "test-key"})
        assert refused.status_code == 400  # a credential in the URL is not a parameter of this route
        with trio.fail_after(10):
            await first_snapshot(client, {"Authorization": "Bearer test-key"})


async def test_a_node_serves_a_bounded_number_of_feeds(tmp_path, monkeypatch):
    monkeypatch.setattr(console_feed, "MAX_STREAMS", 2)
    async with running_node(tmp_path) as herald, http(herald) as client:
        with trio.fail_after(10):
            async with client.stream("GET", "/v1/admin/stream") as one, client.stream("GET", "/v1/admin/stream") as two:
                assert one.status_code == two.status_code == 200
                await one.aiter_lines().__anext__()  # each stream is counted from its first step
                await two.aiter_lines().__anext__()
                third = await client.get("/v1/admin/stream")
                assert third.status_code == 429 and third.headers["Retry-After"] == "5"
            while herald.gateway.console.streams:  # the two gave their slots back when their clients left
                await trio.sleep(0.05)
            async with client.stream("GET", "/v1/admin/stream") as again:
                assert again.status_code == 200


async def test_the_pages_load_nothing_from_elsewhere_and_no_inline_script(tmp_path):
    async with running_node(tmp_path) as herald, httpx.AsyncClient(base_url=herald.url, timeout=10) as client:
        for path in ("/console", "/demo/inbox", "/ui/console.js", "/ui/inbox.js", "/ui/inbox.css", "/ui/console.css"):
            response = await client.get(path)
            assert response.status_code == 200, path
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff" and response.headers["Referrer-Policy"] == "no-referrer"
        page = (await client.get("/console")).text
        assert "<script>" not in page and "http://" not in page and "https://" not in page
        assert (await client.get("/ui/../cli.py")).status_code == 404
        assert (await client.get("/ui/api-key")).status_code == 404


def circuit(channel: Channel, state: str) -> CircuitView:
    return CircuitView(channel, state, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0)


def test_the_feed_keeps_the_latest_notifications_and_breaker_transitions_bounded():
    feed = ConsoleFeed(recent=3, transitions=2)
    for n in range(5):
        feed.note_accepted(f"n{n}", "u", [Channel.SMS, Channel.EMAIL], 1_700_000_000_000 + n)
    assert [a.id for a in feed.recent] == ["n4", "n3", "n2"] and feed.accepted["sms"] == 5 and feed.accepted["web"] == 0
    feed.note_states([circuit(Channel.SMS, "closed")], 0)
    assert not feed.transitions  # the first read is no transition
    feed.note_states([circuit(Channel.SMS, "unavailable")], 1)  # not read: no transition either
    feed.note_states([circuit(Channel.SMS, "open")], 2)
    feed.note_states([circuit(Channel.SMS, "half_open")], 3)
    feed.note_states([circuit(Channel.SMS, "closed")], 4)
    assert [(t.was, t.now) for t in feed.transitions] == [("half_open", "closed"), ("open", "half_open")]


async def test_the_dlq_listing_filters_by_notification(tmp_path):
    """GET /v1/admin/dlq?notification_id= (the console's filter): that notification's entries only; a bad id is a 400."""
    from protocol.messages import RetryLater

    class Down:
        async def send(self, delivery: Any) -> Any:
            return RetryLater("provider down")

    sms = {"channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}
    async with running_node(tmp_path, clients={Channel.SMS: Down()}, max_attempts=1,
                            limits={"sms": {"failure_threshold": 1000}}) as herald, http(herald) as client:
        ids = [(await client.post("/v1/notifications", json={**sms, "user_id": f"f{n}"})).json()["notification_id"] for n in range(3)]
        for nid in ids:
            await wait_final(client, nid)
        page = (await client.get("/v1/admin/dlq", params={"notification_id": ids[1]})).json()
        assert [e["notification_id"] for e in page["items"]] == [ids[1]]
        bad = await client.get("/v1/admin/dlq", params={"notification_id": "nope"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "notification_id"


def test_a_batch_noted_at_once_is_noted_as_its_items_one_by_one():
    """note_accepted_many (the batch route's): the same counts and ring as note_accepted of each item in order, the
    ring bounded (only the newest made into entries)."""
    items = [(f"n{n}", f"u{n}", [Channel.WEB] if n % 3 else [Channel.SMS, Channel.EMAIL]) for n in range(7)]
    one_by_one, at_once = ConsoleFeed(recent=3), ConsoleFeed(recent=3)
    for nid, user, channels in items:
        one_by_one.note_accepted(nid, user, channels, 1_700_000_000_000)
    at_once.note_accepted("n-before", "u", ["web"], 1_699_999_999_999)
    at_once.note_accepted_many(items, 1_700_000_000_000)
    assert at_once.recent == one_by_one.recent and [a.id for a in at_once.recent] == ["n6", "n5", "n4"]
    assert {**at_once.accepted, "web": at_once.accepted["web"] - 1} == one_by_one.accepted
    assert one_by_one.accepted["sms"] == 3 and one_by_one.accepted["web"] == 4
    at_once.note_accepted_many(items[:2], 1_700_000_000_001)  # fewer than the ring holds: the ring keeps older ones too
    assert [a.id for a in at_once.recent] == ["n1", "n0", "n6"]
