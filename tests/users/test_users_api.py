"""Preferences, devices and unsubscribe over HTTP, and what they do to notifications (one node, real clock)."""

from __future__ import annotations

import email
import email.policy
import json
import re
from typing import Any
from urllib.parse import quote

import httpx
import trio

from tests.helpers import http, running_node, wait_final

PREFS = {
    "contact": {"email": "alice@example.org", "phone": "+15555550123", "webhook": "https://hooks.example.org/herald?k=1"},
    "locale": "fr-CA",
    "timezone": "Europe/Paris",
    "channels": {"sms": False},
    "opt_out": ["marketing"],
    "quiet_hours": {"start": "22:00", "end": "07:00"},
}


def statuses(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """channel -> (status, detail of its last attempt)."""
    return {ch: (s["status"], s["attempts"][-1].get("detail", "")) for ch, s in body["channels"].items()}


async def key_with(client: httpx.AsyncClient, *scopes: str) -> str:
    response = await client.post("/v1/admin/keys", json={"scopes": list(scopes), "name": "test"})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


async def test_preferences_round_trip_and_name_the_bad_field(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        fresh = (await client.get("/v1/users/alice/preferences")).json()
        assert fresh == {
            "contact": {}, "locale": None, "timezone": "UTC", "channels": {"email": True, "sms": True, "push": True, "web": True, "webhook": True},
            "opt_out": [], "quiet_hours": None, "digests": {}, "undeliverable": [],
        }
        response = await client.put("/v1/users/alice/preferences", json=PREFS)
        assert response.status_code == 200, response.text
        stored = (await client.get("/v1/users/alice/preferences")).json()
        assert stored == {**PREFS, "channels": {"email": True, "sms": False, "push": True, "web": True, "webhook": True}, "digests": {},
                          "undeliverable": []}

        cases = [
            ({"timezone": "Mars/Olympus_Mons"}, 422, "timezone"),
            ({"quiet_hours": {"start": "08:00", "end": "08:00"}}, 422, "quiet_hours"),
            ({"contact": {"phone": "555-0123"}}, 400, "contact.phone"),
            ({"contact": {"email": "nobody"}}, 400, "contact.email"),
            ({"channels": {"fax": True}}, 400, "channels.fax"),
            ({"quiet_hours": {"start": "7pm", "end": "07:00"}}, 400, "quiet_hours.start"),
            ({"opt_out": ["Marketing"]}, 400, "opt_out.0"),
            ({"colour": "blue"}, 400, "colour"),
            # a webhook URL (protocol/webhook_url.py): scheme, userinfo, port range, host, length, whitespace
            ({"contact": {"webhook": "ftp://hooks.example.com/x"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "file:///etc/passwd"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "https://user:pw@hooks.example.com/x"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "https://hooks.example.com:70000/x"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "https://hooks.example.com:0/x"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "https://hooks.example.com:/x"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "https:///x"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "https://hooks.example.com/x#frag"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "https://[::1/x"}}, 422, "contact.webhook"),
            ({"contact": {"webhook": "https://hooks.example.com/" + "a" * 2048}}, 400, "contact.webhook"),
            ({"contact": {"webhook": "https://hooks.example.com/a b"}}, 400, "contact.webhook"),
            ({"contact": {"webhook": "https://hooks.example.com/\n"}}, 400, "contact.webhook"),
            ({"undeliverable": [{"channel": "push", "address": "tok"}]}, 400, "undeliverable.0.channel"),
        ]
        for body, status, field in cases:
            response = await client.put("/v1/users/alice/preferences", json=body)
            assert response.status_code == status, (body, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in response.json()["errors"]] == [field], response.text
        bad_user = await client.get("/v1/users/" + quote("no spaces", safe="") + "/preferences")
        assert bad_user.status_code == 400 and bad_user.json()["errors"][0]["field"] == "user_id"
        assert (await client.get("/v1/users/alice/preferences")).json()["timezone"] == "Europe/Paris"  # unchanged


async def test_reads_need_read_and_writes_need_send(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as admin:
        reader, sender = await key_with(admin, "read"), await key_with(admin, "send")
        async with http(herald, reader) as client:
            assert (await client.get("/v1/users/alice/preferences")).status_code == 200
            assert (await client.get("/v1/users/alice/devices")).status_code == 200
            assert (await client.put("/v1/users/alice/preferences", json={})).status_code == 403
            assert (await client.post("/v1/users/alice/devices", json={"platform": "fcm", "token": "t"})).status_code == 403
            assert (await client.delete("/v1/users/alice/devices/t")).status_code == 403
        async with http(herald, sender) as client:
            assert (await client.put("/v1/users/alice/preferences", json={})).status_code == 200
            assert (await client.post("/v1/users/alice/devices", json={"platform": "fcm", "token": "t"})).status_code == 201
            assert (await client.get("/v1/users/alice/preferences")).status_code == 403
        async with httpx.AsyncClient(base_url=herald.url) as anonymous:
            assert (await anonymous.get("/v1/users/alice/preferences")).status_code == 401


async def test_devices_register_list_and_delete(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        created = await client.post("/v1/users/alice/devices", json={"platform": "fcm", "token": "fcm:abc_123-x"})
        assert created.status_code == 201, created.text
        assert created.json()["platform"] == "fcm" and created.json()["token"] == "fcm:abc_123-x"
        await client.post("/v1/users/alice/devices", json={"platform": "apns", "token": "a1b2c3"})
        listed = (await client.get("/v1/users/alice/devices")).json()["items"]
        assert [(d["platform"], d["token"]) for d in listed] == [("fcm", "fcm:abc_123-x"), ("apns", "a1b2c3")]
        bad = await client.post("/v1/users/alice/devices", json={"platform": "hms", "token": "x"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "platform"
        assert (await client.delete("/v1/users/alice/devices/a1b2c3")).status_code == 204
        missing = await client.delete("/v1/users/alice/devices/a1b2c3")
        assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "token"
        assert [d["token"] for d in (await client.get("/v1/users/alice/devices")).json()["items"]] == ["fcm:abc_123-x"]


async def test_notifications_reach_the_users_contact_points_and_every_device(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        await client.put("/v1/users/bob/preferences", json={"contact": {"email": "bob@example.org", "phone": "+15555550199"}})
        for token in ("phone-1", "tablet-2"):
            await client.post("/v1/users/bob/devices", json={"platform": "fcm", "token": token})
        response = await client.post("/v1/notifications", json={
            "user_id": "bob", "channels": ["email", "sms", "push"],
            "content": {"email": {"subject": "Hi", "text": "Hello"}, "sms": {"text": "Hello"}, "push": {"title": "Hello"}},
        })
        assert response.status_code == 202, response.text
        nid = response.json()["notification_id"]
        body = await wait_final(client, nid)
        assert {ch: s for ch, (s, _) in statuses(body).items()} == {"email": "delivered", "sms": "delivered", "push": "delivered"}
        eml = email.message_from_bytes((herald.config.outbox_dir / f"{nid}.eml").read_bytes(), policy=email.policy.default)
        assert eml["To"] == "bob@example.org" and eml["List-Unsubscribe"] is None  # no category: no unsubscribe link
        sms = [json.loads(line) for line in (herald.config.data_dir / "sms.jsonl").read_text().splitlines()]
        assert [(m["notification_id"], m["to"]) for m in sms] == [(nid, "+15555550199")]
        push = [json.loads(line) for line in (herald.config.data_dir / "push.jsonl").read_text().splitlines()]
        assert sorted(m["to"] for m in push if m["notification_id"] == nid) == ["phone-1", "tablet-2"]

        # `to` wins over the preferences: this one goes to one address and one device only.
        response = await client.post("/v1/notifications", json={
            "user_id": "bob", "channels": ["email", "push"],
            "content": {"email": {"subject": "Hi", "text": "Hello"}, "push": {"title": "Hello"}},
            "to": {"email": "other@example.org", "device_token": "tablet-2"},
        })
        nid = response.json()["notification_id"]
        await wait_final(client, nid)
        eml = email.message_from_bytes((herald.config.outbox_dir / f"{nid}.eml").read_bytes(), policy=email.policy.default)
        assert eml["To"] == "other@example.org"
        push = [json.loads(line) for line in (herald.config.data_dir / "push.jsonl").read_text().splitlines()]
        assert [m["to"] for m in push if m["notification_id"] == nid] == ["tablet-2"]

        # Nobody knows carol's phone: a 422 naming to.phone.
        carol = {"user_id": "carol", "channels": ["sms"], "content": {"sms": {"text": "x"}}}
        response = await client.post("/v1/notifications", json=carol)
        assert response.status_code == 422 and [e["field"] for e in response.json()["errors"]] == ["to.phone"]


async def test_opt_outs_and_channels_turned_off_fail_with_the_reason(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        await client.put("/v1/users/dan/preferences", json={
            "contact": {"email": "dan@example.org", "phone": "+15555550100"},
            "channels": {"sms": False},
            "opt_out": ["marketing"],
        })
        await client.post("/v1/users/dan/devices", json={"platform": "apns", "token": "d1"})
        promo = await client.post("/v1/notifications", json={
            "user_id": "dan", "channels": ["email", "push"], "category": "marketing", "priority": "critical",
            "content": {"email": {"subject": "Sale", "text": "50% off"}, "push": {"title": "Sale"}},
        })
        assert promo.status_code == 202, promo.text  # accepted: nothing is dropped silently, it is recorded
        body = await wait_final(client, promo.json()["notification_id"])
        assert statuses(body) == {"email": ("failed", "opted out: marketing"), "push": ("failed", "opted out: marketing")}

        alert = await client.post("/v1/notifications", json={
            "user_id": "dan", "channels": ["email", "sms"], "category": "security",
            "content": {"email": {"subject": "New login", "text": "From Paris"}, "sms": {"text": "New login"}},
        })
        body = await wait_final(client, alert.json()["notification_id"])
        assert statuses(body)["sms"] == ("failed", "sms turned off by the user")
        assert statuses(body)["email"][0] == "delivered"
        history = (await client.get("/v1/users/dan/notifications")).json()["items"]
        promo_id = promo.json()["notification_id"]
        assert {(i["channel"], i["status"], i["detail"]) for i in history if i["notification_id"] == promo_id} == {
            ("email", "failed", "opted out: marketing"), ("push", "failed", "opted out: marketing"),
        }
        bad = await client.post("/v1/notifications", json={
            "user_id": "dan", "channels": ["web"], "category": "Not A Category", "content": {"web": {"title": "x"}},
        })
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "category"


async def test_one_click_unsubscribe(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        newsletter = {
            "user_id": "erin", "channels": ["email"], "category": "newsletter",
            "content": {"email": {"subject": "News", "text": "This week"}}, "to": {"email": "erin@example.org"},
        }
        nid = (await client.post("/v1/notifications", json=newsletter)).json()["notification_id"]
        await wait_final(client, nid)
        eml = email.message_from_bytes((herald.config.outbox_dir / f"{nid}.eml").read_bytes(), policy=email.policy.default)
        assert eml["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = re.fullmatch(r"<(.+)>", eml["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]
        assert link.startswith(f"{herald.url}/v1/unsubscribe?token=")
        path = link[len(herald.url):]

        async with httpx.AsyncClient(base_url=herald.url) as mail_client:  # no API key: the token is the authority
            page = await mail_client.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert 'method="post"' in page.text and "newsletter" in page.text
            assert (await client.get("/v1/users/erin/preferences")).json()["opt_out"] == []  # GET never unsubscribes

            done = await mail_client.post(path, content=b"List-Unsubscribe=One-Click",
                                          headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert done.status_code == 200, done.text
            assert done.json() == {"user_id": "erin", "category": "newsletter", "unsubscribed": True}
            again = await mail_client.post(path, headers={"Accept": "text/html"})  # idempotent; a browser gets a page
            assert again.status_code == 200 and "Unsubscribed" in again.text

            token = path.split("token=", 1)[1]
            for bad in (token[:-3] + "AAA", "x" + token, "", "not.a.token"):
                for method in ("GET", "POST"):
                    response = await mail_client.request(method, f"/v1/unsubscribe?token={bad}")
                    assert response.status_code == 400, (method, bad, response.text)
                    assert response.json()["errors"][0]["field"] == "token"
        assert (await client.get("/v1/users/erin/preferences")).json()["opt_out"] == ["newsletter"]

        nid = (await client.post("/v1/notifications", json=newsletter)).json()["notification_id"]
        assert statuses(await wait_final(client, nid)) == {"email": ("failed", "opted out: newsletter")}


async def test_an_unregistered_push_token_is_removed(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        for token in ("good-1", "unregistered-old"):
            await client.post("/v1/users/fay/devices", json={"platform": "fcm", "token": token})
        push = {"user_id": "fay", "channels": ["push"], "content": {"push": {"title": "Hi"}}}
        nid = (await client.post("/v1/notifications", json=push)).json()["notification_id"]
        status, detail = statuses(await wait_final(client, nid))["push"]
        assert status == "delivered" and "unregistered: 1 device(s)" in detail
        assert [d["token"] for d in (await client.get("/v1/users/fay/devices")).json()["items"]] == ["good-1"]

        await client.post("/v1/users/gus/devices", json={"platform": "apns", "token": "unregistered-only"})
        nid = (await client.post("/v1/notifications", json={**push, "user_id": "gus"})).json()["notification_id"]
        assert statuses(await wait_final(client, nid)) == {"push": ("failed", "unregistered")}
        assert (await client.get("/v1/users/gus/devices")).json()["items"] == []
        # With no device left, the next push has nowhere to go: a 422 naming to.device_token.
        with trio.fail_after(5):
            response = await client.post("/v1/notifications", json={**push, "user_id": "gus"})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "to.device_token"
