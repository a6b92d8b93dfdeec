"""Digests over HTTP (one node, real clock): the send's 422s naming the field, GET /v1/users/{id}/digests and who may read it."""

from __future__ import annotations

from tests.helpers import http, running_node, token_for
from tests.realtime.streams import subscriber_client

TEMPLATE = {"locales": {"en": {"email": {"subject": "{{count}} new", "text": "{{#events}}{{author}} {{/events}}"}}}}


def comment(user: str, window: dict, **extra) -> dict:
    return {"user_id": user, "channels": ["email"], "template_id": "comments", "data": {"author": "bo"},
            "to": {"email": f"{user}@example.org"}, "digest": {"key": "comments", "window": window}, **extra}


async def test_digests_are_listed_with_counts_and_fire_times_and_bad_windows_are_422_naming_the_field(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        assert (await client.post("/v1/templates/comments", json=TEMPLATE)).status_code == 201
        hourly = {"kind": "fixed", "every": "1h"}
        for _ in range(3):
            response = await client.post("/v1/notifications", json=comment("alice", hourly))
            assert response.status_code == 202, response.text
        nid = response.json()["notification_id"]
        listed = await client.get("/v1/users/alice/digests")
        assert listed.status_code == 200 and listed.headers["Cache-Control"] == "no-store"
        [item] = listed.json()["items"]
        assert (item["key"], item["count"], item["firing"]) == ("comments", 3, False)
        assert item["fires_at"] > item["last_at"] >= item["first_at"]
        status = (await client.get(f"/v1/notifications/{nid}")).json()["channels"]["email"]
        assert status["status"] == "scheduled" and status["attempts"][-1]["detail"] == "digest comments"
        assert (await client.get("/v1/users/bob/digests")).json() == {"items": []}

        # a subscriber token sees its own user's digests only
        token = await token_for(client, "alice")
        own = await browser.get("/v1/users/alice/digests", headers={"Authorization": f"Bearer {token}"})
        assert own.status_code == 200 and own.json()["items"][0]["count"] == 3
        other = await browser.get("/v1/users/bob/digests", headers={"Authorization": f"Bearer {token}"})
        assert other.status_code == 403, other.text
        assert (await browser.get("/v1/users/alice/digests")).status_code == 401

        # cancelled while its window is open: out of the digest
        cancelled = await client.delete(f"/v1/notifications/{nid}")
        assert cancelled.status_code == 200 and cancelled.json()["cancelled"] == ["email"], cancelled.text
        assert (await client.get("/v1/users/alice/digests")).json()["items"][0]["count"] == 2

        cases = [
            ({"kind": "weekly"}, "digest.window.kind"),
            ({"kind": "fixed", "every": "1 hour"}, "digest.window.every"),
            ({"kind": "fixed", "every": "30s"}, "digest.window.every"),  # under a minute
            ({"kind": "fixed", "every": "8d"}, "digest.window.every"),  # over a week
            ({"kind": "sliding", "after_quiet": "10m"}, "digest.window.max_wait"),
            ({"kind": "sliding", "after_quiet": "10m", "max_wait": "5m"}, "digest.window.max_wait"),
            ({"kind": "daily", "at": "25:00"}, "digest.window.at"),
            ({"kind": "daily", "at": "08:00", "every": "1h"}, "digest.window.every"),
        ]
        for window, field in cases:
            response = await client.post("/v1/notifications", json=comment("alice", window))
            assert response.status_code == 422, (window, response.text)
            assert response.headers["Content-Type"] == "application/problem+json"
            assert [e["field"] for e in response.json()["errors"]] == [field], (window, response.text)
        inline = {**comment("alice", hourly), "template_id": None, "content": {"email": {"subject": "s", "text": "t"}}}
        del inline["template_id"]
        response = await client.post("/v1/notifications", json=inline)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "digest", response.text
        scheduled = comment("alice", hourly, send_at="2030-01-01T00:00:00Z")
        assert (await client.post("/v1/notifications", json=scheduled)).json()["errors"][0]["field"] == "send_at"
        topic = {**comment("alice", hourly), "topic": "news"}
        del topic["user_id"], topic["to"]
        assert (await client.post("/v1/notifications", json=topic)).json()["errors"][0]["field"] == "digest"
        batch = await client.post("/v1/notifications/batch", json={"items": [comment("alice", {"kind": "weekly"}), comment("alice", hourly)]})
        assert batch.status_code == 202 and batch.json()["items"][0]["problem"]["errors"][0]["field"] == "items[0].digest.window.kind"

        # a user's override: checked as a send's window is
        prefs = await client.put("/v1/users/alice/preferences", json={"digests": {"comments": {"kind": "daily", "at": "8am"}}})
        assert prefs.status_code == 422 and [e["field"] for e in prefs.json()["errors"]] == ["digests.comments.at"], prefs.text
        prefs = await client.put("/v1/users/alice/preferences", json={"digests": {"comments": {"kind": "daily", "at": "08:00"}}})
        assert prefs.status_code == 200, prefs.text
