"""A digest's window killed mid-way (kill -9 of `herald serve`): no event is lost and the digest goes out once.

Real time, a real process (MockClock cannot outlive a kill): a sliding window (10 s quiet, at
most 1 min) collects 20 events; the node gets SIGKILL before the window is due; started again on
the same data dir, it collects 10 more into the same window (it was open in the Store, not in the
dead process), fires it once the quiet time has passed, and the email outbox holds one message
listing all 30 (the call log: one provider call). The Digester's crash after a claim (a window
fired again under the same notification id, the send ledger sending it once) is covered by
tests/users/test_digests.py.
"""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import httpx
import pytest
import trio

from actors.clients.call_log import count_call_logs
from tests.process import herald_process

pytestmark = pytest.mark.slow

TEMPLATE = {"locales": {"en": {"email": {"subject": "{{count}} new comments", "text": "{{#events}}* {{author}}\n{{/events}}"}}}}
WINDOW = {"kind": "sliding", "after_quiet": "10s", "max_wait": "1m"}


def comment(n: int) -> dict:
    return {"user_id": "reader", "channels": ["email"], "template_id": "comments", "data": {"author": f"a{n:02}"},
            "digest": {"key": "comments", "window": WINDOW}}


async def post_all(client: httpx.AsyncClient, numbers: range) -> list[str]:
    nids = []
    for n in numbers:
        response = await client.post("/v1/notifications", json=comment(n))
        assert response.status_code == 202, response.text
        nids.append(response.json()["notification_id"])
    return nids


async def test_a_digest_window_killed_mid_way_loses_no_event_and_is_sent_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with herald_process(data) as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30) as client:
            assert (await client.post("/v1/templates/comments", json=TEMPLATE)).status_code == 201
            prefs = {"contact": {"email": "reader@example.org"}}
            assert (await client.put("/v1/users/reader/preferences", json=prefs)).status_code == 200
            first = await post_all(client, range(20))
            [pending] = (await client.get("/v1/users/reader/digests")).json()["items"]
            assert pending["count"] == 20
            server.kill9()
            await server.process.wait()
    async with herald_process(data) as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30) as client:
            await post_all(client, range(20, 30))
            with trio.fail_after(120):
                while (await client.get("/v1/users/reader/digests")).json()["items"]:
                    await trio.sleep(0.5)
                while (await client.get(f"/v1/notifications/{first[0]}")).json()["channels"]["email"]["status"] != "digested":
                    await trio.sleep(0.2)
            status = (await client.get(f"/v1/notifications/{first[0]}")).json()["channels"]["email"]
            carried = status["attempts"][-1]["detail"].removeprefix("in ")
            with trio.fail_after(60):
                while not (data / "outbox" / f"{carried}.eml").exists():
                    await trio.sleep(0.2)
            await trio.sleep(1)  # a second send would come in this second too
    messages = list((data / "outbox").glob("*.eml"))
    assert [m.name for m in messages] == [f"{carried}.eml"]
    message = email.message_from_bytes(messages[0].read_bytes(), policy=policy.default)
    assert message["Subject"] == "30 new comments"
    body = message.get_body(("plain",))
    assert body is not None and body.get_content().split() == [w for n in range(30) for w in ("*", f"a{n:02}")]
    counts = count_call_logs(data, ["email"])["email"]
    assert (counts.calls, counts.deliveries, counts.duplicates) == (1, 1, 0)
