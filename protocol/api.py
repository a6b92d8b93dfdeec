"""REST API request and response schemas; the handlers validate with these."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .channels import Channel, Priority
from .content import Content, Recipient
from .ids import USER_ID_RE
from .lifecycle import Status

UserIdField = Annotated[str, msgspec.Meta(pattern=USER_ID_RE.pattern)]


class NotificationRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: UserIdField
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=4)]
    content: Content
    to: Recipient | None = None
    data: dict[str, Any] = {}
    priority: Priority = Priority.NORMAL


class Receipt(msgspec.Struct, frozen=True):
    notification_id: str
    status: Status = Status.ACCEPTED


class Attempt(msgspec.Struct, frozen=True, omit_defaults=True):
    status: Status
    at: str
    detail: str = ""


class ChannelStatus(msgspec.Struct, frozen=True):
    status: Status
    updated_at: str
    attempts: list[Attempt]


class NotificationStatus(msgspec.Struct, frozen=True):
    notification_id: str
    user_id: str
    created_at: str
    priority: Priority
    channels: dict[str, ChannelStatus]
    final: bool


class HistoryItem(msgspec.Struct, frozen=True, omit_defaults=True):
    notification_id: str
    channel: Channel
    status: Status
    created_at: str
    updated_at: str
    detail: str = ""


class HistoryPage(msgspec.Struct, frozen=True):
    items: list[HistoryItem]
    next_cursor: str | None


class TokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ttl_s: Annotated[int, msgspec.Meta(ge=60, le=30 * 86400)] = 3600


class TokenResponse(msgspec.Struct, frozen=True):
    token: str
    expires_at: str
