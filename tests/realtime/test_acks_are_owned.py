"""Acks are the user's own (issue 7.5): a subscriber session acks, reads or archives only its
user's notifications that were delivered to it; another user's id as a resume point is
refused; a client event never creates a status row.

Bob's notification waits in his inbox (he is not connected); alice's token then tries every
door: WebSocket `?last_id=` and `sync` (then an ack), SSE `Last-Event-ID`, poll `after`, and
the inbox routes under her own path. Nothing of bob's changes, and an ack of an id nobody
knows leaves no row behind.
"""

from __future__ import annotations

import json
from unittest.mock import ANY

import pytest
import trio
from trio_websocket import ConnectionClosed

from actors.api.replay import belongs_to_another_user
from actors.registry import Session
from protocol.channels import Channel
from protocol.frames import CloseCode
from protocol.ids import make_notification_id
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from reactor.backends.embedded import SqliteLogStore
from tests.logstore_writes import WritingLogStore
from reactor.clock import wall_ms
from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_ws, send_web, subscriber_client, wait_unread, ws_sync
from tests.realtime.test_replay import IDS, T0, entry, node

# -- the log store: a client event never creates a row, nor moves another user's


def event(nid: str, user: str, status: Status, *, client: bool, at_ms: int = T0 + 5) -> StatusEvent:
    return StatusEvent(nid, user, Channel.WEB, status, at_ms, detail="by test", created_ms=T0, client=client)


async def everything_about(store: SqliteLogStore, nid: str, user: str) -> tuple[object, ...]:
    return (
        await store.statuses(nid), await store.events(nid), (await store.history(user))[0],
        await store.daily_counts("2024-01-01", "web"),
    )


async def test_a_client_event_never_creates_a_row_nor_touches_another_users(tmp_path):
    store = WritingLogStore(SqliteLogStore(tmp_path / "logs.sqlite3"))
    await store.open()
    try:
        unknown, bobs, alices = IDS[0], IDS[1], IDS[2]
        await store.record([event(bobs, "bob", Status.QUEUED, client=False), event(alices, "alice", Status.QUEUED, client=False)])
        bob_before = await everything_about(store, bobs, "bob")
        await store.record([
            event(unknown, "alice", Status.DELIVERED, client=True),  # an ack of an id nobody knows
            event(unknown, "alice", Status.READ, client=True),
            event(bobs, "alice", Status.DELIVERED, client=True),  # alice's ack of bob's notification
            event(bobs, "alice", Status.READ, client=True),
        ])
        assert await store.statuses(unknown) == [] and await store.events(unknown) == []
        assert [r.notification_id for r in (await store.history("alice"))[0]] == [alices]
        assert await everything_about(store, bobs, "bob") == bob_before  # counters included: nothing moved
        await store.record([event(alices, "alice", Status.DELIVERED, client=True)])  # her own: moves
        assert [(r.user_id, r.status) for r in await store.statuses(alices)] == [("alice", "delivered")]
        assert (await store.daily_counts("2024-01-01", "web"))["delivered"] == 1
        # a client event after a server event of the same batch finds the row the batch made
        await store.record([
            event(IDS[3], "alice", Status.QUEUED, client=False), event(IDS[3], "alice", Status.DELIVERED, client=True),
        ])
        assert [r.status for r in await store.statuses(IDS[3])] == ["delivered"]
        # the server's own events still create rows as before
        await store.record([event(IDS[4], "carol", Status.SENT, client=False)])
        assert [r.status for r in await store.statuses(IDS[4])] == ["sent"]
    finally:
        await store.close()


# -- the replay: only an id of the user's own is claimed (and so may be acked)


async def test_a_resume_point_is_claimed_only_when_it_is_the_users_own(tmp_path):
    async with node(tmp_path) as n:
        await n.push(0, 1)
        await n.write(0)  # 1 is pushed, its inbox row not written yet
        await n.push(7, user="bob")
        await n.logstore.record([event(IDS[7], "bob", Status.QUEUED, client=False)], [entry(7, "bob")])  # as a consumer does
        for last_id, claimed in ((IDS[0], True), (IDS[1], True), (IDS[7], False), (IDS[11], False)):
            session = Session("u1", 16, hold=True)
            await n.register(session)
            await n.replay(session, last_id)
            assert session.was_sent(last_id) is claimed, last_id
        assert await belongs_to_another_user(n.logstore, "u1", IDS[7])
        assert not await belongs_to_another_user(n.logstore, "u1", IDS[0])
        assert not await belongs_to_another_user(n.logstore, "u1", IDS[11])  # nobody's: replays everything, not refused
        assert not await belongs_to_another_user(n.logstore, "bob", IDS[7])
        # known only by its status rows (an email of bob's, say): still bob's
        await n.logstore.record([event(IDS[9], "bob", Status.QUEUED, client=False)])
        assert await belongs_to_another_user(n.logstore, "u1", IDS[9])


async def test_a_session_acks_each_id_it_sent_once():
    session = Session("u1", 16)
    assert session.offer(IDS[0], b"{}")
    assert not session.first_ack(IDS[1])  # never sent here
    assert session.first_ack(IDS[0]) and not session.first_ack(IDS[0])


# -- a running node: every door alice's token has onto bob's notification


async def snapshot(client, nid: str, user: str) -> tuple[object, ...]:
    status = await client.get(f"/v1/notifications/{nid}")
    inbox = await client.get(f"/v1/users/{user}/inbox")
    archived = await client.get(f"/v1/users/{user}/inbox", params={"archived": "true"})
    return status.status_code, status.json(), inbox.json(), archived.json()


async def send_if_open(ws, frame: dict) -> None:
    """Send a frame unless the server has closed the connection already (it may, first)."""
    try:
        await ws.send_message(json.dumps(frame))
    except ConnectionClosed:
        pass


async def closed_with(ws, code: int) -> None:
    with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
        while True:
            await receive_json(ws)
    assert closed.value.reason.code == code, closed.value.reason


async def test_alices_token_cannot_change_any_status_of_bobs_notifications(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        bobs = await send_web(client, "bob", "for bob")
        await wait_unread(client, "bob", 1)
        own = await send_web(client, "alice", "for alice")
        await wait_unread(client, "alice", 1)
        unknown = make_notification_id(wall_ms(), 12345)
        alice = await token_for(client, "alice")
        as_alice = {"Authorization": f"Bearer {alice}"}
        before = await snapshot(client, bobs, "bob")

        # WebSocket: ?last_id= of bob's is refused before anything is claimed (terminal, 4101) ...
        async with open_ws(herald.url, f"{alice}&last_id={bobs}") as ws:
            await send_if_open(ws, {"type": "ack", "id": bobs})
            await closed_with(ws, CloseCode.PROTOCOL_ERROR)
        # ... and so is a sync from it, mid-session
        async with open_ws(herald.url, alice) as ws:
            assert [f["id"] for f in await ws_sync(ws)] == [own]
            await ws.send_message(json.dumps({"type": "sync", "last_id": bobs}))
            await send_if_open(ws, {"type": "ack", "id": bobs})
            await closed_with(ws, CloseCode.PROTOCOL_ERROR)
        # an ack of an id this session never sent is an error frame, whatever the id
        async with open_ws(herald.url, f"{alice}&last_id={unknown}") as ws:
            with trio.fail_after(5):  # nobody's id: the resume replays everything retained
                assert [await receive_json(ws) for _ in range(2)] == [
                    {"type": "notification", "id": own, "created_at": ANY, "title": "for alice", "body": "b"},
                    {"type": "synced", "count": 1},
                ]
            for nid in (bobs, unknown):
                await ws.send_message(json.dumps({"type": "ack", "id": nid}))
                with trio.fail_after(5):
                    frame = await receive_json(ws)
                assert frame == {"type": "error", "detail": f"ack of {nid}: not sent on this session"}
            await ws.send_message(json.dumps({"type": "ack", "id": own}))  # her own, sent by the sync: recorded
        # SSE and poll: 400 naming the field
        for headers, params, field in (
            ({"Last-Event-ID": bobs}, {}, "Last-Event-ID"),
            ({}, {"last_event_id": bobs}, "last_event_id"),
        ):
            refused = await browser.get("/v1/sse", headers={**as_alice, **headers}, params=params)
            assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == field, refused.text
        refused = await browser.get("/v1/poll", params={"after": bobs, "timeout": 0}, headers=as_alice)
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "after", refused.text
        # the inbox routes under her own path: bob's id is not in her inbox (404); his path is 403
        for method, path, body in (
            ("POST", f"/v1/users/alice/inbox/{bobs}/read", None),
            ("POST", f"/v1/users/alice/inbox/{bobs}/archive", None),
            ("POST", "/v1/users/alice/inbox/read_all", {"through": bobs}),
            ("POST", f"/v1/users/alice/inbox/{unknown}/read", None),
        ):
            response = await browser.request(method, path, headers=as_alice, json=body)
            assert response.status_code == 404, (path, response.text)
        for path in (f"/v1/users/bob/inbox/{bobs}/read", f"/v1/users/bob/inbox/{bobs}/archive", "/v1/users/bob/inbox/read_all"):
            assert (await browser.post(path, headers=as_alice)).status_code == 403

        with trio.fail_after(10):  # her own ack is recorded (the recorder has caught up with everything sent before it)
            while (await client.get(f"/v1/notifications/{own}")).json()["channels"]["web"]["status"] != "delivered":
                await trio.sleep(0.02)
        assert await snapshot(client, bobs, "bob") == before
        assert before[1]["channels"]["web"]["status"] == "sent"  # in his inbox, seen by no client
        assert (await client.get(f"/v1/notifications/{unknown}")).status_code == 404  # no row made from a client's event
        assert (await client.get("/v1/users/alice/inbox/unread_count")).json() == {"unread": 1}
