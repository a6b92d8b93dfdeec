"""What a WebSocket session costs the node, and what a client that stops reading can hold (issue 10 item 7).

A session is one task (the one Hypercorn runs the ASGI app in, beside the connection's own
reader): no per-session watchers, nurseries or channels. A client that stops reading never
delays the other sessions: its queue fills, the session is closed as slow, and a send the
kernel has not taken for SEND_TIMEOUT_S ends the connection, so the client cannot hold the
session (nor the buffers behind it) open.
"""

from __future__ import annotations

import json
import socket

import pytest
import trio
from trio_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from actors.api import http_server
from protocol.frames import CloseCode
from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_ws, send_web, ws_sync


def tasks_under(task: trio.lowlevel.Task) -> int:
    """The tasks below `task`, at any depth."""
    return sum(1 + tasks_under(child) for nursery in task.child_nurseries for child in nursery.child_tasks)


async def test_an_idle_websocket_session_costs_one_task_beside_its_connections_reader(tmp_path):
    sessions = 12
    async with running_node(tmp_path) as herald, http(herald) as client:
        tokens = [await token_for(client, f"idle-{i}") for i in range(sessions)]
        root = trio.lowlevel.current_root_task()
        async with open_ws(herald.url, tokens[0]) as first:  # one first, so anything made once is made
            await ws_sync(first)
            before = tasks_under(root)
            async with trio.open_nursery() as nursery:
                opened = trio.Semaphore(0)
                done = trio.Event()

                async def hold(token: str) -> None:
                    async with open_ws(herald.url, token) as ws:
                        await ws_sync(ws)
                        opened.release()
                        await done.wait()

                for token in tokens[1:]:
                    nursery.start_soon(hold, token)
                for _ in tokens[1:]:
                    await opened.acquire()
                with trio.fail_after(5):
                    while herald.registry.session_count() < sessions:
                        await trio.sleep(0.01)
                added = tasks_under(root) - before
                done.set()
    # each session here: the test's client task and trio-websocket's reader task for it; on the
    # server, the connection's reader (Hypercorn) and the task the session runs in (through Quart: eight)
    assert 2 * (sessions - 1) < added <= 4 * (sessions - 1), added


class StalledClient:
    """A WebSocket client that syncs, then never reads again, with a small receive buffer."""

    def __init__(self, url: str, token: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.target = f"/v1/ws?token={token}"
        self.sock = trio.socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async def open(self) -> None:
        await self.sock.connect((self.host, int(self.port)))
        ws = WSConnection(ConnectionType.CLIENT)
        await self.sock.send(ws.send(Request(host=f"{self.host}:{self.port}", target=self.target)))
        with trio.fail_after(10):
            while True:
                ws.receive_data(await self.sock.recv(4096))
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        await self.sock.send(ws.send(TextMessage(json.dumps({"type": "sync"}))))
                    elif isinstance(event, TextMessage) and json.loads(event.data)["type"] == "synced":
                        return  # from here on it reads nothing

    def close(self) -> None:
        self.sock.close()


async def test_a_client_that_stops_reading_is_disconnected_and_never_delays_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(http_server, "SEND_TIMEOUT_S", 0.5)
    big = "x" * 9000  # frames that fill the socket buffers after a few dozen
    async with running_node(tmp_path, session_queue=8) as herald, http(herald) as client:
        stalled = StalledClient(herald.url, await token_for(client, "stalled"))
        await stalled.open()
        try:
            async with open_ws(herald.url, await token_for(client, "reader")) as reader:
                await ws_sync(reader)
                sent = 0
                with trio.fail_after(60):
                    while herald.gateway.limits.caps.held("stalled"):  # until its connection has ended
                        assert sent < 300, "the stalled session was never let go"
                        stuck = {"user_id": "stalled", "channels": ["web"], "content": {"web": {"title": "t", "body": big}}}
                        assert (await client.post("/v1/notifications", json=stuck)).status_code == 202
                        nid = await send_web(client, "reader", "for reader")
                        assert (await receive_json(reader))["id"] == nid  # the other session is served meanwhile
                        sent += 1
                assert herald.registry.session_count() == 1
                nid = await send_web(client, "reader", "after")
                with trio.fail_after(5):
                    assert (await receive_json(reader))["id"] == nid
            with trio.fail_after(10), pytest.raises(ConnectionResetError):  # reset: not kept in the kernel's buffers
                while await stalled.sock.recv(65536):
                    pass
        finally:
            stalled.close()


async def test_websockets_end_with_4002_when_the_node_drains_not_after_its_grace(tmp_path):
    async with running_node(tmp_path, shutdown_grace_s=10) as herald, http(herald) as client:
        tokens = [await token_for(client, user) for user in ("d1", "d2")]
        async with open_ws(herald.url, tokens[0]) as live, open_ws(herald.url, tokens[1]) as unsynced:
            await ws_sync(live)  # one live, one still holding frames until its first frame
            with trio.fail_after(5):
                while herald.registry.session_count() < 2:
                    await trio.sleep(0.01)
            herald.system.request_shutdown()
            for ws in (live, unsynced):
                with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:  # not after the 10 s grace
                    while True:
                        await receive_json(ws)
                assert closed.value.reason.code == CloseCode.SHUTTING_DOWN, closed.value.reason


async def test_permessage_deflate_is_declined_so_a_browser_session_keeps_no_zlib_streams(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        host, port = herald.url.removeprefix("http://").split(":")
        token = await token_for(client, "browser")
        with trio.socket.socket() as sock:
            await sock.connect((host, int(port)))
            ws = WSConnection(ConnectionType.CLIENT)
            offer = Request(host=f"{host}:{port}", target=f"/v1/ws?token={token}", extensions=[PerMessageDeflate()])
            await sock.send(ws.send(offer))  # as every browser does: permessage-deflate; client_max_window_bits
            with trio.fail_after(10):
                while not (accepted := [e for e in ws.events() if isinstance(e, AcceptConnection)]):
                    ws.receive_data(await sock.recv(4096))
            assert accepted[0].extensions == []  # the frames go uncompressed
            await sock.send(ws.send(TextMessage(json.dumps({"type": "sync"}))))
            with trio.fail_after(10):
                while not (frames := [e for e in ws.events() if isinstance(e, TextMessage)]):
                    ws.receive_data(await sock.recv(4096))
            assert json.loads(frames[0].data) == {"type": "synced", "count": 0}
