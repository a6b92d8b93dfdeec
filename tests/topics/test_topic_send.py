"""A topic send reaches every subscriber, each with their own preferences; its status shows the fan-out."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import trio

from protocol.channels import Channel
from protocol.topics import member_notification_id
from tests.helpers import http, running_node

TEMPLATE = {"name": "Digest", "locales": {"en": {"sms": {"text": "Hello {{name}}"}}, "fr": {"sms": {"text": "Bonjour {{name}}"}}}}


def quiet_now() -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {"start": (now - dt.timedelta(hours=1)).strftime("%H:%M"), "end": (now + dt.timedelta(hours=2)).strftime("%H:%M")}


PREFERENCES: dict[str, dict[str, Any]] = {
    "ann": {"contact": {"phone": "+15555550101"}},
    "bob": {"contact": {"phone": "+15555550102"}, "opt_out": ["digest"]},
    "cat": {"contact": {"phone": "+15555550103"}, "quiet_hours": quiet_now()},
    "dan": {"contact": {"phone": "+15555550104"}, "locale": "fr"},
    "eve": {},  # no phone: her copy fails, naming the missing address
}


async def topic_status(client: httpx.AsyncClient, nid: str, seconds: float = 20) -> dict[str, Any]:
    body: dict[str, Any] = {}
    with trio.move_on_after(seconds):
        while True:
            response = await client.get(f"/v1/notifications/{nid}")
            assert response.status_code == 200, response.text
            body = response.json()
            if body["final"]:
                return body
            await trio.sleep(0.05)
    raise AssertionError(f"the fan-out did not finish: {body}")


def sms_lines(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "sms.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


async def wait_for_sms(data_dir: Path, users: set[str], seconds: float = 20) -> list[dict[str, Any]]:
    with trio.move_on_after(seconds):
        while not users <= {line["user_id"] for line in sms_lines(data_dir)}:
            await trio.sleep(0.05)
    return sms_lines(data_dir)


async def test_a_topic_send_reaches_each_subscriber_with_their_own_preferences(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/digest", json=TEMPLATE)).status_code == 201
        for user, prefs in PREFERENCES.items():
            assert (await client.put(f"/v1/users/{user}/preferences", json=prefs)).status_code == 200
        await client.put("/v1/topics/weekly/subscribers", json={"user_ids": list(PREFERENCES)})
        send = {"topic": "weekly", "channels": ["sms"], "template_id": "digest", "data": {"name": "Sam"}, "category": "digest",
                "priority": "high"}
        response = await client.post("/v1/notifications", json=send)
        assert response.status_code == 202, response.text
        nid = response.json()["notification_id"]
        status = await topic_status(client, nid)
        assert status["topic"] == "weekly" and status["state"] == "done" and status["priority"] == "high"
        assert status["subscribers"] == status["expanded"] == 5
        assert status["channels"] == {"sms": {"queued": 2, "held": 1, "failed": 2}}, status
        lines = await wait_for_sms(herald.config.data_dir, {"ann", "dan"})
        texts = {line["user_id"]: line["text"] for line in lines}
        assert texts == {"ann": "Hello Sam", "dan": "Bonjour Sam"}, "each one's locale; bob opted out, cat is in quiet hours, eve has no phone"
        for user in PREFERENCES:
            copy = member_notification_id(nid, user)
            history = (await client.get(f"/v1/users/{user}/notifications")).json()["items"]
            assert [item["notification_id"] for item in history] == [copy], "each copy is readable by its own id, in the user's history"
            view = (await client.get(f"/v1/notifications/{copy}")).json()
            assert view["topic_send"] == nid and view["user_id"] == user and view["priority"] == "high", view
            sms = view["channels"]["sms"]
            if user == "bob":
                assert sms["status"] == "failed" and "digest" in sms["attempts"][-1]["detail"], sms
            elif user == "cat":
                assert sms["status"] == "queued" and sms["attempts"][-1]["detail"].startswith("quiet hours until"), sms
            elif user == "eve":
                assert sms["status"] == "failed" and "to.phone" in sms["attempts"][-1]["detail"], sms
        calls = [json.loads(line) for line in (herald.config.data_dir / "calls" / "sms.jsonl").read_text().splitlines()]
        assert sorted(c["nid"] for c in calls if "call" in c) == sorted(member_notification_id(nid, u) for u in ("ann", "dan"))


async def test_a_topic_send_is_refused_with_to_or_with_user_id_and_ends_with_no_subscribers(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        base = {"channels": ["sms"], "content": {"sms": {"text": "hi"}}}
        for body, field in (
            ({**base, "topic": "t", "to": {"phone": "+15555550100"}}, "to"),
            ({**base, "topic": "t", "user_id": "ann"}, "topic"),
            (base, "user_id"),
            ({"topic": "t", "channels": ["sms"]}, "content"),
            ({**base, "topic": "t", "template_id": "missing"}, "template_id"),
        ):
            response = await client.post("/v1/notifications", json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["errors"][0]["field"] == field, (body, response.text)
        for bad in ("T", "", "a" * 101, "a b"):
            response = await client.post("/v1/notifications", json={**base, "topic": bad})
            assert response.status_code in (400, 422) and response.json()["errors"][0]["field"] == "topic", (bad, response.text)
        response = await client.post("/v1/notifications", json={**base, "topic": "empty"})
        assert response.status_code == 202
        status = await topic_status(client, response.json()["notification_id"])
        assert (status["state"], status["subscribers"], status["expanded"], status["channels"]) == (
            "done", 0, 0, {"sms": {"queued": 0, "held": 0, "failed": 0}})
        batch = await client.post("/v1/notifications/batch", json={"items": [
            {**base, "topic": "empty"}, {**base, "topic": "empty", "to": {"phone": "+15555550100"}},
        ]})
        assert batch.status_code == 202, batch.text
        items = batch.json()["items"]
        assert "notification_id" in items[0] and items[1]["problem"]["errors"][0]["field"] == "items[1].to", items
        assert (await topic_status(client, items[0]["notification_id"]))["final"]


async def test_subscribers_who_leave_during_the_fan_out_are_skipped_once_the_cursor_reaches_them(tmp_path) -> None:
    users = [f"u{i:02d}" for i in range(10)]
    async with running_node(tmp_path, fanout_batch=3) as herald, http(herald) as client:
        for user in [*users, "zz"]:
            await client.put(f"/v1/users/{user}/preferences", json={"contact": {"phone": "+15555550100"}})
        await client.put("/v1/topics/t/subscribers", json={"user_ids": users})
        store = herald.store
        real = store.subscribers
        pages = 0

        async def subscribers(topic: str, after: str, limit: int) -> list[str]:
            nonlocal pages
            pages += 1
            if pages == 2:  # after the first batch: u05 and u08 leave, u00 (behind the cursor) too; zz joins ahead of it
                await store.remove_subscribers(topic, ["u05", "u08", "u00"])
                await store.add_subscribers(topic, ["zz"])
            return await real(topic, after, limit)

        store.subscribers = subscribers  # type: ignore[method-assign]
        response = await client.post("/v1/notifications", json={"topic": "t", "channels": ["sms"], "content": {"sms": {"text": "x"}}})
        nid = response.json()["notification_id"]
        status = await topic_status(client, nid)
        assert status["expanded"] == 9 and status["channels"]["sms"]["queued"] == 9, status
        lines = await wait_for_sms(herald.config.data_dir, {"u00", "zz"})
        assert sorted(line["user_id"] for line in lines) == sorted([*(u for u in users if u not in ("u05", "u08")), "zz"])


async def test_a_batch_expanded_again_after_a_crash_before_its_checkpoint_reaches_the_provider_once(tmp_path) -> None:
    """The window kill -9 rarely hits: the batch is on the bus, its checkpoint is not. The fan-out actor dies there,
    is restarted by its supervisor, expands the same batch again (same users, same ids), and the ledger stops the copies."""
    users = [f"u{i:02d}" for i in range(30)]
    # consumer_window=1: records after the first of a partition are not maybe-sent for having come early after the start
    async with running_node(tmp_path, fanout_batch=10, consumer_window=1) as herald, http(herald) as client:
        for user in users:
            await client.put(f"/v1/users/{user}/preferences", json={"contact": {"phone": "+15555550100"}})
        await client.put("/v1/topics/t/subscribers", json={"user_ids": users})
        store = herald.store
        real = store.checkpoint_fanout
        checkpoints = 0

        async def checkpoint_fanout(*args: Any) -> bool:
            nonlocal checkpoints
            checkpoints += 1
            if checkpoints == 2:
                await trio.sleep(0.5)  # the batch's records are durable on the bus and go out meanwhile
                raise RuntimeError("crashed between the bus append and the checkpoint")
            return await real(*args)

        store.checkpoint_fanout = checkpoint_fanout  # type: ignore[method-assign]
        response = await client.post("/v1/notifications", json={"topic": "t", "channels": ["sms"], "content": {"sms": {"text": "x"}}})
        nid = response.json()["notification_id"]
        status = await topic_status(client, nid)
        assert checkpoints >= 4, "the second batch's checkpoint failed once and was written again"
        assert status["expanded"] == 30 and status["channels"]["sms"] == {"queued": 30, "held": 0, "failed": 0}, status
        await wait_for_sms(herald.config.data_dir, set(users))
        await trio.sleep(0.5)  # a second copy would be called in this time
        calls = [json.loads(line) for line in (herald.config.data_dir / "calls" / "sms.jsonl").read_text().splitlines()]
        called = sorted(c["nid"] for c in calls if "call" in c)
        assert called == sorted(member_notification_id(nid, u) for u in users), "each subscriber's copy called once"
        assert herald.providers[Channel.SMS].suppressed == 10, "the batch's second copies were stopped by the send ledger"
