"""The registry meets the producers of frames only through the Broker (issue 9 item 5).

A node subscribes to a user while it holds one of the user's sessions, and only then; a
frame anyone publishes to the user (a web delivery, an inbox-state change) reaches the
node's sessions; a node whose subscription the Broker cuts off closes its sessions (their
clients reconnect and resume) and, restarted by its supervisor, subscribes afresh.
"""

from __future__ import annotations

import json

import trio
from trio.testing import wait_all_tasks_blocked
from trio_websocket import open_websocket_url

from actors.clients.web import push_frame
from actors.messages import Broadcast, Register, Unregister
from actors.registry import LOST, ConnectionRegistry, RecentPushes, Session
from protocol.frames import CloseCode
from protocol.messages import encode_fanout
from reactor.backends.embedded import MemoryBroker, MemoryState
from reactor.mailbox import Mailbox
from reactor.supervisor import ChildSpec, RestartPolicy, Supervisor
from tests.helpers import http, receive_json, running_node, token_for, web_notification, ws_url
from tests.realtime.test_replay import IDS, queued


async def test_a_node_is_subscribed_to_a_user_exactly_while_it_holds_a_session_of_theirs():
    broker = MemoryBroker()
    registry = ConnectionRegistry(Mailbox("registry", 16), broker, RecentPushes(MemoryState()))
    first, second = Session("u1", 8), Session("u1", 8)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        assert broker.subscriptions("u1") == 0
        await registry.mailbox.send(Register(first))
        await registry.mailbox.send(Register(second))
        await wait_all_tasks_blocked()
        assert broker.subscriptions("u1") == 1  # one node, however many sessions
        assert await push_frame(broker, registry.recent, "u1", IDS[0], b'{"type":"notification"}') == 1
        await registry.mailbox.send(Unregister(first))
        await wait_all_tasks_blocked()
        assert broker.subscriptions("u1") == 1
        await registry.mailbox.send(Unregister(second))
        await wait_all_tasks_blocked()
        assert broker.subscriptions("u1") == 0
        assert await broker.publish("u1", encode_fanout("notification", IDS[1], b"{}")) == 0
        registry.mailbox.close()
    assert [item.id for item in queued(first)] == [IDS[0]] and [item.id for item in queued(second)] == [IDS[0]]


async def test_an_inbox_broadcast_goes_through_the_broker_to_every_node_of_the_user():
    broker = MemoryBroker()
    here = ConnectionRegistry(Mailbox("here", 16), broker, RecentPushes(MemoryState()))
    there = ConnectionRegistry(Mailbox("there", 16), broker, RecentPushes(MemoryState()))
    mine, theirs = Session("u1", 8), Session("u1", 8)
    async with trio.open_nursery() as nursery:
        await nursery.start(here.run)
        await nursery.start(there.run)
        await here.mailbox.send(Register(mine))
        await there.mailbox.send(Register(theirs))
        await wait_all_tasks_blocked()
        await here.mailbox.send(Broadcast("u1", "read", b'{"type":"read","ids":[]}'))  # an inbox route on this node
        await wait_all_tasks_blocked()
        here.mailbox.close()
        there.mailbox.close()
    assert [item.kind for item in queued(mine)] == ["read"] and [item.kind for item in queued(theirs)] == ["read"]
    assert (here.broadcasts, there.broadcasts) == (1, 1)


async def test_a_node_cut_off_by_the_broker_closes_its_sessions_and_subscribes_again_once_restarted():
    broker = MemoryBroker()
    registry = ConnectionRegistry(Mailbox("registry", 16), broker, RecentPushes(MemoryState()))
    supervisor = Supervisor("delivery", [ChildSpec("registry", registry.run, stop=registry.mailbox.close)],
                            RestartPolicy(backoff_initial_s=0.01))
    before, after = Session("u1", 8), Session("u1", 8)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await registry.mailbox.send(Register(before))
        await wait_all_tasks_blocked()
        [subscription] = broker._channels["u1"]
        subscription._cut_off()  # as the Broker does to a node too far behind
        with trio.fail_after(5):
            while not before.closed:
                await before.wait()
        assert (before.close_code, before.close_reason) == (CloseCode.SHUTTING_DOWN, LOST)
        assert registry.lost == 1 and registry.session_count() == 0
        with trio.fail_after(5):
            while supervisor.statistics()[0].restarts < 1:
                await trio.sleep(0.01)
        await registry.mailbox.send(Unregister(before))  # its transport leaves: nothing to do
        await registry.mailbox.send(Register(after))
        await wait_all_tasks_blocked()
        assert await broker.publish("u1", encode_fanout("notification", IDS[2], b"{}")) == 1
        await wait_all_tasks_blocked()
        supervisor.stop()
    assert [item.id for item in queued(after)] == [IDS[2]]


async def test_a_frame_anyone_publishes_to_the_user_reaches_the_websocket(tmp_path):
    """The node's sessions take frames from the Broker, whichever node (or producer) published them."""
    async with running_node(tmp_path) as herald, http(herald) as client:
        token = await token_for(client, "u1")
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            await ws.send_message(json.dumps({"type": "sync"}))
            assert (await receive_json(ws))["type"] == "synced"
            frame = json.dumps({"type": "notification", "id": IDS[3], "created_at": "2024-01-01T00:00:00Z", "title": "from afar"})
            assert await herald.backends.broker.publish("u1", encode_fanout("notification", IDS[3], frame.encode())) == 1
            assert (await receive_json(ws))["title"] == "from afar"
            # and the node's own web deliveries take the same road
            await client.post("/v1/notifications", json=web_notification("u1", "from here"))
            assert (await receive_json(ws))["title"] == "from here"
            assert herald.registry is not None and herald.registry.pushed == 2
