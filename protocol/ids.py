"""Typed identifiers.

A NotificationId is a ULID-style string: 10 characters of milliseconds since the epoch
then 16 random characters, Crockford base32. Ids therefore sort by creation time,
which is what history pagination and WebSocket sync ("everything after id X") rely on.
"""

from __future__ import annotations

import re
from typing import NewType

NotificationId = NewType("NotificationId", str)
UserId = NewType("UserId", str)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}(?!\n)$")
NOTIFICATION_ID_RE = _ULID_RE  # public: the OpenAPI description states it
# `.` and `..` are refused: a user id is a path segment (/v1/users/{user_id}/...).
USER_ID_RE = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._:@-]{1,128}(?!\n)$")
USER_ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ : @ -, other than . and .."


_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]  # 10 bits -> 2 characters


def _b32(value: int, length: int) -> str:
    """The low 5 x `length` bits of `value` in `length` characters (an even number), two at a time."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(5 * length - 10, -1, -10)])


def make_notification_id(epoch_ms: int, entropy: int) -> NotificationId:
    """Build an id from a wall-clock millisecond count and 80 random bits."""
    if not 0 <= epoch_ms < 2**48:
        raise ValueError("epoch_ms out of range")
    return NotificationId(_b32(epoch_ms, 10) + _b32(entropy & (2**80 - 1), 16))


def notification_id_ms(nid: str) -> int:
    """The creation time (ms since the epoch) carried by an id."""
    value = 0
    for ch in nid[:10]:
        value = value * 32 + _ALPHABET.index(ch)
    return value


def is_notification_id(value: str) -> bool:
    return bool(_ULID_RE.match(value))


def is_user_id(value: str) -> bool:
    return bool(USER_ID_RE.match(value))
