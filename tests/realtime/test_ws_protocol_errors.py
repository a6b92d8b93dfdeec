"""A client's frame the WebSocket protocol forbids is answered with a close frame of its code, then the connection ends.

RFC 6455 7.1.7: the server SHOULD send the close before it drops the connection. wsproto refuses the frame but stays
OPEN, and Hypercorn answered only a close it was in the middle of, so the connection was dropped with no close frame and
the client saw 1006 (actors/api/websocket_limit.py, FailingConnection). The session leaves the registry either way.
"""

from __future__ import annotations

import base64
import os
import struct
from urllib.parse import urlsplit

import pytest
import trio

from tests.helpers import http, running_node, token_for

pytestmark = pytest.mark.trio


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """One client frame (masked unless told otherwise), payloads under 126 bytes."""
    assert len(payload) < 126
    key = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | rsv | opcode, (0x80 if mask else 0) | len(payload)])
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if mask else head + payload


BAD_FRAMES = {
    "unmasked": (frame(1, b'{"type": "ping"}', mask=False), 1002),
    "a reserved bit": (frame(1, b'{"type": "ping"}', rsv=0x40), 1002),
    "text that is not UTF-8": (frame(1, b"\xff\xfe"), 1007),
    "a fragmented ping": (frame(9, b"x", fin=False), 1002),
    "an unknown opcode": (frame(3, b"x"), 1002),
    "a continuation with nothing to continue": (frame(0, b"x"), 1002),
    "a close code no one may send": (frame(8, struct.pack(">H", 999)), 1002),
}


async def close_code_after(url: str, token: str, raw: bytes) -> int | None:
    """Open a session, send `raw`, read to the end: the code of the server's close frame, None if it sent none."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    assert host is not None and port is not None
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all((f"GET /v1/ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n").encode())
        received = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(4096)
            assert b" 101 " in received.split(b"\r\n")[0], received[:200]
            frames = received.split(b"\r\n\r\n", 1)[1]
            await stream.send_all(raw)
            while chunk := await stream.receive_some(4096):
                frames += chunk
    at = frames.rfind(b"\x88")  # the server's close frame: unmasked, a 2-byte code and its reason, under 126 bytes
    return struct.unpack(">H", frames[at + 2 : at + 4])[0] if at >= 0 and 2 <= frames[at + 1] < 126 else None


async def test_each_forbidden_frame_gets_a_close_frame_with_its_code(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        token = await token_for(client, "alice")
        codes = {name: await close_code_after(herald.url, token, raw) for name, (raw, _) in BAD_FRAMES.items()}
        assert codes == {name: code for name, (_, code) in BAD_FRAMES.items()}
        with trio.fail_after(10):
            while herald.registry.session_count():
                await trio.sleep(0.05)
