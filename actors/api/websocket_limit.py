"""Make Hypercorn's `websocket_max_message_size` stop buffering at the limit (a workaround).

Hypercorn 0.18 (hypercorn/protocol/ws_stream.py `WebsocketBuffer.extend`) writes each
incoming fragment into the message buffer *before* comparing the length with the limit,
and never drops the buffer after refusing: it answers close 1009 at the first fragment
past the limit, then keeps appending every later fragment of the same message. A 15 MiB
message against a 4 KiB limit was buffered whole (15,728,640 bytes); a message that never
ends grows without bound. Nor is the application told: after its close 1009, Hypercorn
handles one event per read (`break` after each refusal) and never sends the app a
disconnect, so the session stayed registered until its heartbeat ran out. See
docs/upstream-websocket-buffer.md.

Second, a frame wsproto cannot parse (unmasked, a reserved bit, bad UTF-8, a long or fragmented control frame, an
unknown opcode, a bad close code): wsproto yields a CloseConnection with the code (1002, 1007) but stays OPEN, and
Hypercorn answers only a close in REMOTE_CLOSING, so the TCP connection was dropped with no close frame and the client
saw 1006. RFC 6455 7.1.7 says the server SHOULD send the close first: `FailingConnection` moves to REMOTE_CLOSING
there, so Hypercorn answers with that code, then closes.

`install()` swaps in a buffer that refuses the first fragment that would pass the limit
without writing it (Hypercorn answers close 1009 at once, as before), drops the rest of
that message silently (so Hypercorn reads on, and the client's own close is seen), and
turns the end of that message into a `websocket.disconnect` for the application. A
connection never holds more than the limit; the application never sees any part of
the message.
"""

from __future__ import annotations

from collections.abc import Generator
from importlib.metadata import version

from hypercorn.protocol import ws_stream
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event, Message
from wsproto.frame_protocol import CloseReason

WSPROTO_SUPPORTED = ("1.2.", "1.3.")  # the wsproto versions whose Connection._state this module was checked against


class BoundedWebsocketBuffer(ws_stream.WebsocketBuffer):
    """A WebsocketBuffer that holds at most `max_length` characters or bytes, ever."""

    def __init__(self, max_length: int) -> None:
        super().__init__(max_length)
        self.refused = False  # a message went past the limit: the connection is closing (1009)

    def extend(self, event: Message[str] | Message[bytes | bytearray]) -> None:
        if self.refused:
            return  # the rest of a refused message (or anything after it): dropped unread
        if self.length + len(event.data) > self.max_length:
            self.refused = True
            self.value, self.length = None, 0
            raise ws_stream.FrameTooLargeError()  # Hypercorn sends close 1009
        super().extend(event)

    def to_message(self) -> dict[str, object]:
        if self.refused:  # the refused message is complete: the application learns the connection is gone
            return {"type": "websocket.disconnect", "code": CloseReason.MESSAGE_TOO_BIG.value}
        message: dict[str, object] = super().to_message()
        return message


class FailingConnection(Connection):
    """wsproto's Connection, whose own refusal of a client's frame is answered with a close frame of its code."""

    def events(self) -> Generator[Event, None, None]:
        for event in super().events():
            if isinstance(event, CloseConnection) and self._state is ConnectionState.OPEN:
                self._state = ConnectionState.REMOTE_CLOSING  # a frame it could not parse: Hypercorn now answers the close
            yield event


def install() -> None:
    """Let every WebSocket Hypercorn opens from now on use the bounded buffer and answer bad frames (idempotent)."""
    if not version("wsproto").startswith(WSPROTO_SUPPORTED):
        raise RuntimeError(f"wsproto {version('wsproto')} is not one this module was checked against ({WSPROTO_SUPPORTED})")
    # Deliberate monkeypatches: mypy refuses any assignment to a class, so these lines are exempted by its code.
    ws_stream.WebsocketBuffer = BoundedWebsocketBuffer  # type: ignore[misc]
    ws_stream.Connection = FailingConnection  # type: ignore[attr-defined]
