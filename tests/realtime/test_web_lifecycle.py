"""The web channel's lifecycle on a running node (issue 8 items 4 and 5).

- An immediate ack (as `herald listen` sends) races the consumer's `sent`: the timeline
  must still read accepted, queued, sent, delivered, its times never going back.
- In the inbox is `sent`, and final: a web notification to a user nobody has connected
  for is settled. A client that sees it makes it `delivered`: a WebSocket ack, an SSE
  event, a long-poll answer (live or replayed); a read makes it `read`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_sse, open_ws, poll, send_web, subscriber_client, wait_unread, ws_sync

NOTIFICATIONS = 60  # the ack overtook the consumer's `sent` for 115-119 of 120 on the tree before the fix


async def web_status(client: httpx.AsyncClient, nid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/notifications/{nid}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_web(client: httpx.AsyncClient, nid: str, status: str) -> dict[str, Any]:
    """The notification's status once its web channel is `status` (bounded)."""
    body: dict[str, Any] = {}
    with trio.move_on_after(10):
        while True:
            body = await web_status(client, nid)
            if body["channels"]["web"]["status"] == status:
                return body
            await trio.sleep(0.02)
    raise AssertionError(f"web is not {status} after 10 s: {body}")


def steps(body: dict[str, Any]) -> list[str]:
    return [a["status"] for a in body["channels"]["web"]["attempts"]]


async def wait_steps(client: httpx.AsyncClient, nid: str, expected: list[str]) -> dict[str, Any]:
    """The status once its web timeline is `expected` (bounded). The edge records `delivered` and the worker `sent`:
    either may be written first, and the timeline puts them in lifecycle order once both are in."""
    body: dict[str, Any] = {}
    with trio.move_on_after(10):
        while True:
            body = await web_status(client, nid)
            if steps(body) == expected:
                return body
            await trio.sleep(0.02)
    raise AssertionError(f"the web timeline is not {expected} after 10 s: {steps(body)}")


async def test_an_immediate_ack_keeps_the_timeline_in_lifecycle_order(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        token = await token_for(client, "alice")
        acked: list[str] = []
        async with open_ws(herald.url, token) as ws, trio.open_nursery() as nursery:
            await ws_sync(ws)

            async def ack_at_once() -> None:
                while True:
                    frame = await receive_json(ws)
                    if frame["type"] == "notification":
                        await ws.send_message(json.dumps({"type": "ack", "id": frame["id"]}))
                        acked.append(frame["id"])

            nursery.start_soon(ack_at_once)
            ids: list[str] = []

            async def sender(k: int) -> None:
                for i in range(NOTIFICATIONS // 4):
                    ids.append(await send_web(client, "alice", f"n{k}.{i}"))

            async with trio.open_nursery() as senders:
                for k in range(4):
                    senders.start_soon(sender, k)
            with trio.fail_after(20):
                while len(acked) < NOTIFICATIONS:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert sorted(acked) == sorted(ids)
        bodies = [await wait_web(client, nid, "delivered") for nid in ids]
        timelines = [body["channels"]["web"]["attempts"] for body in bodies]
        misordered = [
            attempts for attempts in timelines
            if [a["status"] for a in attempts] != ["accepted", "queued", "sent", "delivered"]
            or [a["at"] for a in attempts] != sorted(a["at"] for a in attempts)
        ]
        assert misordered == [], f"{len(misordered)} of {NOTIFICATIONS} out of lifecycle order, e.g. {misordered[0]}"
        assert all(body["final"] and body["channels"]["web"]["final"] for body in bodies)
        # the ack's detail is the delivered step's; the consumer's `sent` keeps its own
        body = await web_status(client, ids[0])
        assert [a.get("detail", "") for a in body["channels"]["web"]["attempts"]][2:] == [
            "in the inbox; pushed to the live sessions on 1 node(s)", "acknowledged by the client",
        ]


async def test_web_to_an_offline_user_is_final_once_in_the_inbox(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        nid = await send_web(client, "bob", "while away")
        await wait_unread(client, "bob", 1)
        body = await wait_web(client, nid, "sent")
        assert body["final"] is True and body["channels"]["web"]["final"] is True
        assert steps(body) == ["accepted", "queued", "sent"]
        assert body["channels"]["web"]["attempts"][-1]["detail"] == "in the inbox; no live session"
        [row] = (await client.get("/v1/users/bob/notifications")).json()["items"]
        assert (row["status"], row["final"], row["detail"]) == ("sent", True, "in the inbox; no live session")
        # reading it in the inbox is the next step (seen by no client: sent -> read is a legal skip)
        assert (await client.post(f"/v1/users/bob/inbox/{nid}/read")).status_code == 200
        body = await wait_web(client, nid, "read")
        assert steps(body) == ["accepted", "queued", "sent", "read"] and body["final"]


async def test_a_client_that_sees_it_makes_it_delivered_on_every_transport(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "carol")

        # WebSocket: seen when acked; a frame that is not acked stays sent (final)
        async with open_ws(herald.url, token) as ws:
            await ws_sync(ws)
            unacked = await send_web(client, "carol", "not acked")
            with trio.fail_after(10):
                assert (await receive_json(ws))["id"] == unacked
            acked = await send_web(client, "carol", "acked")
            with trio.fail_after(10):
                assert (await receive_json(ws))["id"] == acked
            await ws.send_message(json.dumps({"type": "ack", "id": acked}))
            body = await wait_web(client, acked, "delivered")
            assert body["channels"]["web"]["attempts"][-1]["detail"] == "acknowledged by the client"
        body = await wait_web(client, unacked, "sent")
        assert body["channels"]["web"]["final"] and steps(body) == ["accepted", "queued", "sent"]

        # SSE: an event written to a live stream is delivered
        async with open_sse(browser, token) as sse:
            assert await sse.until_synced() == []
            live = await send_web(client, "carol", "over sse")
            with trio.fail_after(10):
                assert (await sse.next_event()).id == live
            body = await wait_steps(client, live, ["accepted", "queued", "sent", "delivered"])
        assert body["channels"]["web"]["attempts"][-1]["detail"] == "delivered over SSE"

        # ... and one replayed on resume (Last-Event-ID): what came while away
        away = [await send_web(client, "carol", f"away {i}") for i in range(2)]
        await wait_web(client, away[1], "sent")
        async with open_sse(browser, token, last_id=away[0]) as sse:
            assert [e.id for e in await sse.until_synced()] == [away[1]]
            await wait_web(client, away[1], "delivered")
        assert (await web_status(client, away[0]))["channels"]["web"]["status"] == "sent"  # not handed over: still sent

        # long-poll: in the answer is delivered (waiting for it after the newest one seen, so none is missed)
        async with trio.open_nursery() as nursery:
            answer: dict[str, Any] = {}

            async def wait_for_one() -> None:
                answer.update(await poll(browser, token, after=away[1], timeout=10))

            nursery.start_soon(wait_for_one)
            polled = await send_web(client, "carol", "over poll")
        assert [item["id"] for item in answer["items"]] == [polled]
        body = await wait_web(client, polled, "delivered")
        assert body["channels"]["web"]["attempts"][-1].get("detail") == "returned by a long-poll", body
        # ... and on resume: what came after `after` is handed over, `after` itself is not
        resumed = [item["id"] for item in (await poll(browser, token, after=unacked, timeout=0))["items"]]
        assert resumed == [acked, live, *away, polled]
        for nid in (acked, live, *away, polled):
            await wait_web(client, nid, "delivered")
        assert (await web_status(client, unacked))["channels"]["web"]["status"] == "sent"


async def test_a_second_session_adds_no_step(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "dave")
        async with open_ws(herald.url, token) as one, open_ws(herald.url, token) as two, open_sse(browser, token) as sse:
            await ws_sync(one)
            await ws_sync(two)
            assert await sse.until_synced() == []
            nid = await send_web(client, "dave", "to three sessions")
            with trio.fail_after(10):
                assert (await receive_json(one))["id"] == nid
                assert (await receive_json(two))["id"] == nid
                assert (await sse.next_event()).id == nid
            for ws in (one, two):
                await ws.send_message(json.dumps({"type": "ack", "id": nid}))
            await wait_web(client, nid, "delivered")
            # a read after it, then a late ack: neither the acks nor the SSE event add a second `delivered`
            await client.post(f"/v1/users/dave/inbox/{nid}/read")
            body = await wait_web(client, nid, "read")
            await one.send_message(json.dumps({"type": "ack", "id": nid}))
            await one.send_message(json.dumps({"type": "ping"}))
            with trio.fail_after(10):  # the read frame, then the pong: the ack before the ping was handled
                assert [(await receive_json(one))["type"] for _ in range(2)] == ["read", "pong"]
        body = await web_status(client, nid)
        assert steps(body) == ["accepted", "queued", "sent", "delivered", "read"]
