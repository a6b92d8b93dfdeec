"""A subscriber frame written straight to the connection's socket, past Hypercorn's and wsproto's layers per frame.

Through ASGI a frame goes: the `websocket.send` message, WSStream.app_send, wsproto's
Connection.send (the frame built in a bytearray), H11Protocol.stream_send, the connection's
`protocol_send` (its send lock, a cancel scope with the send timeout) and trio's
SocketStream.send_all (a checkpoint: one turn of the scheduler per frame). In a broadcast to
10,000 sessions that was a large share of the CPU per subscriber after the kernel's own send
(docs/performance.md, "Broadcast to 10,000 sessions").

`write_now` encodes the text frame once (RFC 6455 5.2: FIN, opcode 1, no mask from a server)
and hands it to the kernel at once, without yielding, when nothing can be in the way: the
WebSocket is open (Hypercorn's state CONNECTED, wsproto's OPEN, no extension, no fragmented
message under way), no other task holds the connection's send lock (a ping, a close, a
frame half written) and the connection is not closing. A complete server text message
changes none of wsproto's state, so Hypercorn's view stays right. What the kernel did not
take (a full send buffer: a slow client) is left to the caller's ordinary path, which waits
under the lock with the send timeout and closes the connection on an error: `write_now`
takes the send lock before it writes and keeps it when the kernel took only part, and
`send_rest` sends the rest under it (raw bytes that must follow what went, with nothing
between them, not even a pong, a close or a cancellation's unwinding), then releases it.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from wsproto.connection import ConnectionState

import trio
from trio import SocketStream

from .http_server import GuardedConnection


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame of `payload` (UTF-8 JSON), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65_536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def _open_connection(send: Any) -> GuardedConnection | None:
    """The connection under an ASGI `send` of Hypercorn's WSStream, if a frame may be written to it directly now."""
    stream = getattr(send, "__self__", None)
    if type(stream) is not WSStream or stream.closed or stream.state is not ASGIWebsocketState.CONNECTED:
        return None
    ws = stream.connection
    proto = getattr(ws, "_proto", None)
    if ws.state is not ConnectionState.OPEN or proto is None or proto.extensions or proto._outbound_opcode is not None:
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):  # HTTP/2 (RFC 8441) frames a WebSocket's bytes in DATA frames of its own
        return None
    connection = getattr(protocol.send, "__self__", None)
    if not isinstance(connection, GuardedConnection) or connection.closing or connection.send_lock.locked():
        return None
    if not isinstance(connection.stream, SocketStream):  # TLS: the bytes go through the SSL object, not the socket
        return None
    return connection


def app_channel(send: Any) -> trio.MemorySendChannel[Any] | None:
    """The channel Hypercorn's WSStream puts the client's messages in for the app (its `app_put`), under an ASGI `send`."""
    stream = getattr(send, "__self__", None)
    if type(stream) is not WSStream or stream.closed:
        return None
    channel = getattr(stream.app_put, "__self__", None)
    return channel if isinstance(channel, trio.MemorySendChannel) else None


def write_now(send: Any, frame: bytes) -> tuple[GuardedConnection, bytes] | None:
    """Write the frame straight to the socket if it can go that way now: None if it cannot (the caller sends it through
    ASGI), else the connection and what the kernel did not take (b"" when all of it went)."""
    connection = _open_connection(send)
    if connection is None:
        return None
    data = text_frame(frame)
    stream = connection.stream
    assert isinstance(stream, SocketStream)
    connection.send_lock.acquire_nowait()  # free (checked just now, nothing ran since): no other send can start
    try:
        sent = os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError:  # the connection broke: the ordinary path meets the error too and closes it
        sent = 0
    except BaseException:
        connection.send_lock.release()
        raise
    if sent == len(data):
        connection.send_lock.release()
        return connection, b""
    return connection, data[sent:]  # the lock stays held: send_rest sends the rest and releases it


async def send_rest(connection: GuardedConnection, rest: bytes) -> None:
    """The part of a frame the kernel did not take, under the send lock `write_now` kept (nothing comes between the two
    parts, a cancellation included), with the connection's send timeout and close on error; the lock then released."""
    await connection.send_rest_held(rest)
