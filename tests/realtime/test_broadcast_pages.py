"""A topic's web deliveries go out in pages (the web Provider's `send_many`: one Broker `publish_many` per page)
and keep every guarantee of one delivery at a time (docs/performance.md, "Broadcast to 10,000 sessions"):
each live session gets the frame once and its ack is recorded `delivered`; a client that reconnects while the
broadcast runs resumes with no gap and no duplicate; a slow session in a page is closed as slow, and the rest
of its page gets the frame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import trio
from trio.testing import wait_all_tasks_blocked
from trio_websocket import open_websocket_url

from actors.clients.web import WebClient
from actors.messages import Register
from actors.registry import ConnectionRegistry, RecentPushes, Session
from protocol.channels import Channel
from protocol.content import Content, WebContent
from protocol.frames import CloseCode
from protocol.messages import Delivery, Sent
from protocol.topics import member_notification_id
from reactor.backends.embedded import MemoryBroker, MemoryState
from reactor.mailbox import Mailbox
from tests.helpers import http, receive_json, running_node, token_for, web_notification, ws_url
from tests.realtime.streams import ws_sync
from tests.realtime.test_replay import queued


def counting_pages(broker: Any) -> list[int]:
    """Wrap the node's Broker's publish_many: the sizes of its calls."""
    calls: list[int] = []
    plain = broker.publish_many

    async def counted(messages: Sequence[tuple[str, bytes]]) -> list[int]:
        calls.append(len(messages))
        return list(await plain(messages))

    broker.publish_many = counted
    return calls


async def next_notification(ws: Any) -> dict[str, Any]:
    with trio.fail_after(20):
        while True:
            frame = await receive_json(ws)
            if frame["type"] == "notification":
                return frame
            assert frame["type"] == "pong", frame


async def nothing_queued_before_pong(ws: Any) -> None:
    """A ping's pong comes after everything queued on the session before it: no other frame may come first."""
    await ws.send_message(json.dumps({"type": "ping"}))
    with trio.fail_after(10):
        frame = await receive_json(ws)
    assert frame["type"] == "pong", f"a frame before the pong: {frame}"


async def wait_delivered(client: httpx.AsyncClient, nid: str) -> None:
    with trio.fail_after(20):
        while True:
            web = (await client.get(f"/v1/notifications/{nid}")).json()["channels"]["web"]
            if web["status"] == "delivered":
                return
            await trio.sleep(0.05)


async def test_a_topic_broadcast_reaches_each_live_session_once_in_pages_and_each_ack_is_recorded(tmp_path) -> None:
    users = [f"u{i:03d}" for i in range(90)]
    async with running_node(tmp_path) as herald, http(herald) as client:
        pages = counting_pages(herald.backends.broker)
        assert herald.registry is not None
        async with trio.open_nursery() as nursery:
            sockets: dict[str, list[Any]] = {}
            for user in users + [users[0]]:  # the first user has two sessions
                ws = await nursery.start(_open, ws_url(herald.url, await token_for(client, user)))
                await ws_sync(ws)
                sockets.setdefault(user, []).append(ws)
            pushed = herald.registry.pushed
            await client.put("/v1/topics/all/subscribers", json={"user_ids": users})
            response = await client.post("/v1/notifications", json={"topic": "all", "channels": ["web"],
                                                                     "content": {"web": {"title": "To all", "body": "b"}}})
            assert response.status_code == 202, response.text
            send = response.json()["notification_id"]
            for user, wss in sockets.items():
                for ws in wss:
                    frame = await next_notification(ws)
                    assert frame["id"] == member_notification_id(send, user) and frame["title"] == "To all", frame
                    await ws.send_message(json.dumps({"type": "ack", "id": frame["id"]}))
                    await nothing_queued_before_pong(ws)
            assert herald.registry.pushed - pushed == len(users) + 1, "one frame queued per session"
            for user in users:
                await wait_delivered(client, member_notification_id(send, user))
            nursery.cancel_scope.cancel()
    assert sum(pages) == len(users) and len(pages) < len(users), f"publish_many calls of {pages}: not pages"


async def _open(url: str, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    async with open_websocket_url(url) as ws:
        task_status.started(ws)
        await trio.sleep_forever()


async def test_a_client_reconnecting_during_the_broadcast_resumes_with_no_gap_and_no_duplicate(tmp_path) -> None:
    quiet = [f"a{i:04d}" for i in range(400)]  # no session: expanded first (the fan-out's cursor goes by user id)
    movers = [f"z{i:02d}" for i in range(24)]  # reconnect while the pages go out
    async with running_node(tmp_path) as herald, http(herald) as client:
        tokens = {user: await token_for(client, user) for user in movers}
        earlier: dict[str, str] = {}
        async with trio.open_nursery() as nursery:
            first = {user: await nursery.start(_open, ws_url(herald.url, tokens[user])) for user in movers}
            for user, ws in first.items():
                await ws_sync(ws)
                earlier[user] = (await client.post("/v1/notifications", json=web_notification(user, "before"))).json()["notification_id"]
                assert (await next_notification(ws))["id"] == earlier[user]
            await client.put("/v1/topics/many/subscribers", json={"user_ids": quiet + movers})
            response = await client.post("/v1/notifications", json={"topic": "many", "channels": ["web"],
                                                                     "content": {"web": {"title": "Broadcast", "body": "b"}}})
            assert response.status_code == 202, response.text
            send = response.json()["notification_id"]
            for user in movers:  # each drops its session and resumes from the last id it saw, while the fan-out runs
                await first[user].aclose()
                resumed = await nursery.start(_open, ws_url(herald.url, tokens[user]) + f"&last_id={earlier[user]}")
                seen: list[str] = []
                synced = False
                with trio.fail_after(20):  # the replay, `synced`, and the copy (replayed, or live after it)
                    while not synced or member_notification_id(send, user) not in seen:
                        frame = await receive_json(resumed)
                        if frame["type"] == "notification":
                            seen.append(frame["id"])
                        else:
                            assert frame["type"] == "synced" and not synced, frame
                            synced = True
                await nothing_queued_before_pong(resumed)
                assert seen == [member_notification_id(send, user)], f"{user} resumed with {seen}"
            nursery.cancel_scope.cancel()


def web_delivery(n: int, user: str) -> Delivery:
    return Delivery(f"01JAAAAAAAAAAAAAAAAAAAA{n:03d}", user, Channel.WEB, 0, Content(web=WebContent("page", "b")))


async def test_a_slow_session_in_a_page_is_closed_and_the_rest_of_the_page_gets_the_frame() -> None:
    broker = MemoryBroker()
    recent = RecentPushes(MemoryState())
    registry = ConnectionRegistry(Mailbox("registry", 64), broker, recent)
    users = [f"p{i}" for i in range(10)]
    sessions = {user: Session(user, 8) for user in users}
    slow = Session("p-slow", 1)
    assert slow.offer(None, b'{"type":"read"}', "read")  # its one place is taken: the client reads nothing
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        for session in [*sessions.values(), slow]:
            await registry.mailbox.send(Register(session))
        await wait_all_tasks_blocked()
        page = [web_delivery(n, user) for n, user in enumerate([*users[:5], "p-slow", *users[5:]])]
        outcomes = await WebClient(broker, recent).send_many(page)
        await wait_all_tasks_blocked()
        registry.mailbox.close()
    assert all(isinstance(o, Sent) for o in outcomes)
    assert slow.closed and slow.close_code == CloseCode.SLOW_CONSUMER
    for n, user in enumerate([*users[:5], "p-slow", *users[5:]]):
        if user != "p-slow":
            assert [item.id for item in queued(sessions[user])] == [page[n].notification_id], user
    assert [nid for nid, _ in await recent.of("p3")] == [page[3].notification_id], "kept for a resume before it was published"
