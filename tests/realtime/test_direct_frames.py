"""The subscriber frame written straight to the socket (actors/api/direct_frames.py): framed as wsproto frames it,
and taken only while nothing else may be writing to the connection; the session's task woken by a message in its
receive channel (a nudge) rather than a cancellation."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url
from wsproto.frame_protocol import FrameProtocol, Opcode

from actors.api import websocket_endpoint
from actors.api.direct_frames import text_frame, write_now
from actors.registry import Session
from tests.helpers import http, receive_json, running_node, token_for, web_notification, ws_url
from tests.realtime.streams import ws_sync


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
def test_text_frame_is_wsprotos_server_frame(size: int) -> None:
    payload = ("x" * size).encode()
    expected = bytes(FrameProtocol(client=False, extensions=[]).send_data(payload.decode(), fin=True))
    assert text_frame(payload) == expected


def test_a_client_parses_it_back() -> None:
    payload = '{"type":"notification","title":"é ✓"}'.encode()
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(text_frame(payload))
    frames = list(client.received_frames())
    assert len(frames) == 1 and frames[0].opcode is Opcode.TEXT and frames[0].message_finished
    assert frames[0].payload == payload.decode()


def test_not_hypercorns_send_goes_the_ordinary_way() -> None:
    async def send(message: dict) -> None:  # an ASGI send of another server (or a test's)
        return None

    assert write_now(send, b"{}") is None


async def test_a_nudge_wakes_a_waiting_session_once_per_wait_without_cancelling() -> None:
    nudges: list[str] = []

    def nudge() -> bool:
        nudges.append("nudged")
        return True

    session = Session("u1", 8)
    with session.interruptible(nudge=nudge) as scope:
        assert session.offer("01JAAAAAAAAAAAAAAAAAAAA001", b"{}")
        assert session.offer("01JAAAAAAAAAAAAAAAAAAAA002", b"{}")
        session.close(4001, "closing")
        assert nudges == ["nudged"] and not scope.cancel_called  # the task wakes to all three at once
    with session.interruptible(nudge=nudge) as scope:
        assert scope.cancel_called  # queued before the wait: no wait at all
    assert nudges == ["nudged"]


async def test_a_nudge_that_cannot_wake_it_leaves_the_cancellation() -> None:
    session = Session("u1", 8)
    with session.interruptible(nudge=lambda: False) as scope:
        assert session.offer("01JAAAAAAAAAAAAAAAAAAAA001", b"{}")
        assert scope.cancel_called
    assert session.next_nowait() is not None and session.next_nowait() is None
    with session.interruptible() as scope:  # no nudge (SSE, long-poll): cancelled as before
        assert not scope.cancel_called
        session.close(4001, "closing")
        assert scope.cancel_called


async def test_a_live_websocket_session_is_woken_by_a_nudge_and_its_frames_go_straight_to_the_socket(tmp_path, monkeypatch) -> None:
    answers: list[bool] = []
    plain = websocket_endpoint.Socket.nudge

    def counted(self: websocket_endpoint.Socket) -> bool:
        answers.append(plain(self))
        return answers[-1]

    monkeypatch.setattr(websocket_endpoint.Socket, "nudge", counted)
    direct: list[bytes] = []  # what each frame written straight to the socket left for the ordinary path
    plain_write = websocket_endpoint.write_now

    def write_counted(send: Any, frame: bytes) -> Any:
        written = plain_write(send, frame)
        if written is not None:
            direct.append(written[1])
        return written

    monkeypatch.setattr(websocket_endpoint, "write_now", write_counted)
    async with running_node(tmp_path) as herald, http(herald) as client:
        async with open_websocket_url(ws_url(herald.url, await token_for(client, "u1"))) as ws:
            await ws_sync(ws)
            nid = (await client.post("/v1/notifications", json=web_notification("u1", "nudged"))).json()["notification_id"]
            with trio.fail_after(10):
                frame = await receive_json(ws)
            assert frame["type"] == "notification" and frame["id"] == nid
            await ws.send_message(json.dumps({"type": "ping"}))
            with trio.fail_after(10):
                assert (await receive_json(ws))["type"] == "pong"
    assert answers and all(answers), answers
    assert len(direct) >= 3 and not any(direct), "synced, the notification and the pong went straight to the socket, whole"


async def test_a_frame_the_kernel_takes_in_part_is_finished_under_the_send_lock(tmp_path, monkeypatch) -> None:
    """The kernel takes half of each frame: the rest goes under the send lock write_now kept, then the lock is free
    again (the pong after it would wait for ever otherwise), and the client reads whole frames in order."""
    import os
    from types import SimpleNamespace

    from actors.api import direct_frames

    halves: list[int] = []

    def half_write(fd: int, data: bytes) -> int:
        halves.append(len(data))
        return os.write(fd, data[: max(1, len(data) // 2)])

    monkeypatch.setattr(direct_frames, "os", SimpleNamespace(write=half_write))
    async with running_node(tmp_path) as herald, http(herald) as client:
        async with open_websocket_url(ws_url(herald.url, await token_for(client, "u1"))) as ws:
            await ws_sync(ws)
            bodies = [{"user_id": "u1", "channels": ["web"], "content": {"web": {"title": f"half {n}", "body": "x" * 300}}}
                      for n in range(3)]
            nids = [(await client.post("/v1/notifications", json=body)).json()["notification_id"] for body in bodies]
            with trio.fail_after(10):
                got = [await receive_json(ws) for _ in nids]
            assert [f["id"] for f in got] == nids and all(f["title"].startswith("half") for f in got)
            await ws.send_message(json.dumps({"type": "ping"}))
            with trio.fail_after(10):
                assert (await receive_json(ws))["type"] == "pong"
    assert len(halves) >= 4, "the frames went through the direct path"
