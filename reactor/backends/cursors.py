"""Cursors of a user's listings (history, inbox), as the log store backends hand them out.

Url-safe base64 of a JSON list: the listing ("history", "inbox"), a short digest of the
user it was handed out for, then the last row's sort key. A cursor of another listing or
another user, or one that does not decode to that shape, is InvalidCursor (the routes'
400). The sort keys' integers fit a signed 64-bit column (SQLite's INTEGER, CQL's bigint).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from reactor.ports import InvalidCursor


def _owner(user_id: str) -> str:
    """A short digest of the user a cursor was handed out for: the cursor names its user without spelling the id."""
    return hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def _encode_key(listing: str, user_id: str, *parts: int | str) -> str:
    """An opaque, url-safe cursor for a row's sort key in one user's listing ("history", "inbox")."""
    raw = json.dumps([listing, _owner(user_id), *parts], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_key(cursor: str, listing: str, user_id: str, shape: tuple[type, ...]) -> list[int | str]:
    """The sort key in a cursor of this user's listing, checked against `shape`; InvalidCursor if it is not one."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeError, RecursionError):  # RecursionError: "[[[[..." nested past the limit
        raise InvalidCursor("invalid cursor") from None
    if not isinstance(key, list) or len(key) != 2 + len(shape):
        raise InvalidCursor("invalid cursor")
    if key[0] != listing or key[1] != _owner(user_id):
        raise InvalidCursor(f"invalid cursor: not one of this user's {listing} pages")
    for part, kind in zip(key[2:], shape):
        # type() is: a bool is not an int here; ints must fit SQLite's INTEGER
        if type(part) is not kind or (isinstance(part, int) and not -(2**63) <= part < 2**63):
            raise InvalidCursor("invalid cursor")
    return key[2:]


def encode_cursor(user_id: str, created_ms: int, notification_id: str, channel: str) -> str:
    """An opaque, url-safe cursor for a row's sort key in the user's history."""
    return _encode_key("history", user_id, created_ms, notification_id, channel)


def decode_cursor(cursor: str, user_id: str) -> tuple[int, str, str]:
    """The sort key in a cursor of the user's history; raises InvalidCursor if it is not one."""
    created_ms, notification_id, channel = _decode_key(cursor, "history", user_id, (int, str, str))
    return int(created_ms), str(notification_id), str(channel)


def encode_inbox_cursor(user_id: str, seq: int, notification_id: str) -> str:
    """An opaque, url-safe cursor for a row's position (delivery order) in the user's inbox."""
    return _encode_key("inbox", user_id, seq, notification_id)


def decode_inbox_cursor(cursor: str, user_id: str) -> tuple[int, str]:
    """The position in a cursor of the user's inbox; raises InvalidCursor if it is not one."""
    seq, notification_id = _decode_key(cursor, "inbox", user_id, (int, str))
    return int(seq), str(notification_id)
