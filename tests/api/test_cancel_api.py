"""POST with send_at and DELETE /v1/notifications/{id} over HTTP, on a real node (real time: nothing here fires)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import trio

from tests.helpers import http, running_node, web_notification


def later(hours: float = 24) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).isoformat()


def sms(user: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "channels": ["sms"], "to": {"phone": "+15555550100"}, "content": {"sms": {"text": "hi"}}, **extra}


async def test_a_scheduled_send_shows_scheduled_and_is_cancelled_by_delete_once_and_for_all(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        body = {**web_notification(), "channels": ["web", "sms"], "to": {"phone": "+15555550100"}, "send_at": later()}
        body["content"]["sms"] = {"text": "hi"}
        response = await client.post("/v1/notifications", json=body)
        assert response.status_code == 202, response.text
        nid = response.json()["notification_id"]
        status = (await client.get(f"/v1/notifications/{nid}")).json()
        assert {c: (s["status"], s["final"]) for c, s in status["channels"].items()} == {
            "web": ("scheduled", False), "sms": ("scheduled", False)}
        assert status["channels"]["sms"]["attempts"][-1]["detail"].startswith("until ")
        cancelled = await client.delete(f"/v1/notifications/{nid}")
        assert cancelled.status_code == 200, cancelled.text
        assert sorted(cancelled.json()["cancelled"]) == ["sms", "web"] and cancelled.json()["already_gone"] == []
        again = await client.delete(f"/v1/notifications/{nid}")
        assert sorted(again.json()["cancelled"]) == ["sms", "web"]
        status = (await client.get(f"/v1/notifications/{nid}")).json()
        assert {c: (s["status"], s["final"]) for c, s in status["channels"].items()} == {
            "web": ("cancelled", True), "sms": ("cancelled", True)}
        assert status["final"] is True
        assert await herald.gateway.store.scheduled() == []


async def test_a_delivered_channel_has_gone_and_an_unknown_id_is_404(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        nid = (await client.post("/v1/notifications", json=sms())).json()["notification_id"]
        with trio.move_on_after(20):
            while (await client.get(f"/v1/notifications/{nid}")).json()["channels"]["sms"]["status"] != "delivered":
                await trio.sleep(0.05)
        answer = await client.delete(f"/v1/notifications/{nid}")
        assert answer.status_code == 200
        assert answer.json() == {"notification_id": nid, "cancelled": [], "already_gone": [{"channel": "sms", "status": "delivered"}]}
        missing = await client.delete("/v1/notifications/01J0000000000000000000000Z")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        bad = await client.delete("/v1/notifications/nope")
        assert bad.status_code == 400 and "notification_id" in bad.text


async def test_bad_send_at_is_a_422_naming_it_on_the_route_and_in_a_batch(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
        for send_at, says in ((later().replace("+00:00", ""), "offset"), (later(24 * 400), "366 days"), (past, "past")):
            response = await client.post("/v1/notifications", json=sms(send_at=send_at))
            assert response.status_code == 422, (send_at, response.text)
            assert says in response.text and response.json()["errors"][0]["field"] == "send_at"
        schema = await client.post("/v1/notifications", json=sms(send_at={"local": "9am", "in": "user"}))  # the schema's 400
        assert schema.status_code == 400 and schema.json()["errors"][0]["field"] == "send_at.local"
        assert "a time of day as HH:MM" in schema.text
        topic = await client.post("/v1/notifications", json={**sms(), "user_id": None, "to": None, "topic": "news", "send_at": later()})
        assert topic.status_code == 422 and topic.json()["errors"][0]["field"] == "send_at"
        batch = await client.post("/v1/notifications/batch", json={"items": [sms(send_at=later()), sms(send_at=past)]})
        assert batch.status_code == 202, batch.text
        items = batch.json()["items"]
        assert "notification_id" in items[0] and items[1]["problem"]["errors"][0]["field"] == "items[1].send_at"
        scheduled = (await client.get(f"/v1/notifications/{items[0]['notification_id']}")).json()
        assert scheduled["channels"]["sms"]["status"] == "scheduled"
        local = await client.post("/v1/notifications", json=sms(send_at={"local": "09:00", "in": "user"}))
        assert local.status_code == 202
