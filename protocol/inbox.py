"""The in-app inbox's REST schemas (GET/POST /v1/users/{user_id}/inbox...): pure data.

The inbox is the web channel's store: every web notification delivered to a user, in
delivery order, with its read and archived state. Listings are newest first and leave
the archived ones out (`archived=true` lists only those). Unread means neither read nor
archived, for the unread count and for read-all alike.
"""

from __future__ import annotations

from typing import Any

import msgspec


class InboxItem(msgspec.Struct, frozen=True):
    """One web notification in a user's inbox, with its read and archived state."""

    id: str
    created_at: str
    title: str
    body: str = ""
    url: str | None = None
    data: dict[str, Any] = {}
    read_at: str | None = None
    archived_at: str | None = None


class InboxPage(msgspec.Struct, frozen=True):
    items: list[InboxItem]
    next_cursor: str | None


class UnreadCount(msgspec.Struct, frozen=True):
    """Unread and not archived."""

    unread: int


class ReadAllRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Mark read everything delivered up to and including `through` (every notification when absent)."""

    through: str | None = None


class ReadAllResult(msgspec.Struct, frozen=True):
    count: int  # how many were unread (as UnreadCount counts: not read, not archived) and are read now
    through: str | None  # the newest notification covered (delivery order); None for an empty inbox
    read_at: str
