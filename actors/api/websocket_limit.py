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

`install()` swaps in a buffer that refuses the first fragment that would pass the limit
without writing it (Hypercorn answers close 1009 at once, as before), drops the rest of
that message silently (so Hypercorn reads on, and the client's own close is seen), and
turns the end of that message into a `websocket.disconnect` for the application. A
connection never holds more than the limit; the application never sees any part of
the message.
"""

from __future__ import annotations

from hypercorn.protocol import ws_stream
from wsproto.events import Message
from wsproto.frame_protocol import CloseReason


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


def install() -> None:
    """Let every WebSocket Hypercorn opens from now on use the bounded buffer (idempotent)."""
    # A deliberate monkeypatch: mypy refuses any assignment to a class, so this one line is exempted by its code.
    ws_stream.WebsocketBuffer = BoundedWebsocketBuffer  # type: ignore[misc]
