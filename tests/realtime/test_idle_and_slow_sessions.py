"""What a WebSocket session costs the node (issue 10 item 7).

A session is one task (the one Hypercorn runs the ASGI app in, beside the connection's own
reader): no per-session watchers, nurseries or channels; a draining node closes them all at once.
"""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed

from protocol.frames import CloseCode
from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_ws, ws_sync


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
    # server, the connection's reader (Hypercorn) and the task the session runs in
    assert added == 4 * (sessions - 1), added


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
