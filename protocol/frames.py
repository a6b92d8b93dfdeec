"""WebSocket frames (JSON text messages), version 1.

Server -> client: notification, pong, synced, error.
Client -> server: ping, ack, sync.
Every frame has a `type`; notification frames carry `v` so clients can refuse a newer
format.
"""

from __future__ import annotations

from typing import Any

import msgspec

FRAME_VERSION = 1


class NotificationFrame(msgspec.Struct, frozen=True, tag="notification", tag_field="type", omit_defaults=True):
    id: str
    created_at: str
    title: str
    body: str = ""
    url: str | None = None
    data: dict[str, Any] = {}
    v: int = FRAME_VERSION


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="type"):
    pass


class Synced(msgspec.Struct, frozen=True, tag="synced", tag_field="type"):
    """Sent after a sync: `count` notifications were replayed, the session is now live."""

    count: int


class ErrorFrame(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    detail: str


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type", forbid_unknown_fields=True):
    pass


class Ack(msgspec.Struct, frozen=True, tag="ack", tag_field="type", forbid_unknown_fields=True):
    id: str


class Sync(msgspec.Struct, frozen=True, tag="sync", tag_field="type", forbid_unknown_fields=True):
    last_id: str | None = None


ClientFrame = Ping | Ack | Sync
ServerFrame = NotificationFrame | Pong | Synced | ErrorFrame

client_frame_decoder = msgspec.json.Decoder(ClientFrame)
server_frame_decoder = msgspec.json.Decoder(ServerFrame)
frame_encoder = msgspec.json.Encoder()


class CloseCode:
    """WebSocket close codes: 4000-4099 reconnect later, 4100-4199 terminal."""

    HEARTBEAT_MISSED = 4000
    SLOW_CONSUMER = 4001
    SHUTTING_DOWN = 4002
    UNAUTHORIZED = 4100
    PROTOCOL_ERROR = 4101
