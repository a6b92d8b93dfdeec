"""Real-time frames (JSON), version 1: the same JSON on WebSocket, SSE and long-poll.

Server -> client: notification, read, read_all, archived, pong, synced, error.
Client -> server (WebSocket only): ping, ack, sync.
Every frame has a `type`; notification and inbox-state frames carry `v` so clients can
refuse a newer format. On SSE each frame is one event named after its type (`data:` is
the frame's JSON; notification events carry `id: <notification id>`); long-poll returns
a list of frames (PollResponse).
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


class ReadFrame(msgspec.Struct, frozen=True, tag="read", tag_field="type"):
    """These notifications were marked read (on another session or through the API)."""

    ids: list[str]
    read_at: str
    v: int = FRAME_VERSION


class ReadAllFrame(msgspec.Struct, frozen=True, tag="read_all", tag_field="type"):
    """Every notification delivered up to and including `through` (delivery order) is read.

    `through` is None when nothing was unread; `count` is how many were marked now.
    """

    through: str | None
    count: int
    read_at: str
    v: int = FRAME_VERSION


class ArchivedFrame(msgspec.Struct, frozen=True, tag="archived", tag_field="type"):
    """These notifications were archived: they leave the inbox listing."""

    ids: list[str]
    archived_at: str
    v: int = FRAME_VERSION


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="type"):
    pass


class Synced(msgspec.Struct, frozen=True, tag="synced", tag_field="type"):
    """After a sync or resume: the `count` notifications sent before it caught the client up; it is live now."""

    count: int


class ErrorFrame(msgspec.Struct, frozen=True, tag="error", tag_field="type", omit_defaults=True):
    """Something went wrong. `code`, when set, is the CloseCode the session ends with (SSE has no close code of its own)."""

    detail: str
    code: int | None = None


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type", forbid_unknown_fields=True):
    pass


class Ack(msgspec.Struct, frozen=True, tag="ack", tag_field="type", forbid_unknown_fields=True):
    id: str


class Sync(msgspec.Struct, frozen=True, tag="sync", tag_field="type", forbid_unknown_fields=True):
    last_id: str | None = None


class PollResponse(msgspec.Struct, frozen=True):
    """GET /v1/poll: the frames in delivery order, and the cursor for the next poll.

    `last_id` is the id of the last notification in `items`, or the `after` the poll was
    given when none arrived (so a client can always pass it back as `after`).
    """

    items: list[msgspec.Raw]
    last_id: str | None


ClientFrame = Ping | Ack | Sync
ServerFrame = NotificationFrame | ReadFrame | ReadAllFrame | ArchivedFrame | Pong | Synced | ErrorFrame

client_frame_decoder = msgspec.json.Decoder(ClientFrame)
server_frame_decoder = msgspec.json.Decoder(ServerFrame)
frame_encoder = msgspec.json.Encoder()


# Clients send only small control frames (ping, ack, sync): a WebSocket message past this is
# refused with close code 1009 (message too big) without the server buffering it.
MAX_CLIENT_MESSAGE_BYTES = 4096


class CloseCode:
    """WebSocket close codes: 4000-4099 reconnect later, 4100-4199 terminal.

    SSE streams end with an `error` event carrying the same code. 1009 (message too big)
    is the standard code for a client message over MAX_CLIENT_MESSAGE_BYTES.
    """

    HEARTBEAT_MISSED = 4000
    SLOW_CONSUMER = 4001
    SHUTTING_DOWN = 4002
    TOKEN_EXPIRED = 4003  # fetch a new token, then reconnect (and resume)
    TOO_MANY_SESSIONS = 4004  # the user or token holds as many sessions as allowed: reconnect later, with backoff
    RATE_LIMITED = 4005  # over the user's request rate: reconnect after a pause
    UNAUTHORIZED = 4100
    PROTOCOL_ERROR = 4101  # a bad last_id (not a notification id, or another user's notification)
