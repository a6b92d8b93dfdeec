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


class IdEncoder:
    """make_notification_id for ids minted in order: the time's 10 characters and the entropy's first 12 are kept from
    the id before while they stay the same (ids of one millisecond count up: only the last 4 characters change)."""

    __slots__ = ("_ms", "_ms_text", "_high", "_high_text")

    def __init__(self) -> None:
        self._ms: int | None = None
        self._ms_text = ""
        self._high = -1
        self._high_text = ""

    def encode(self, epoch_ms: int, entropy: int) -> NotificationId:
        """The same id as make_notification_id(epoch_ms, entropy)."""
        if epoch_ms != self._ms:
            if not 0 <= epoch_ms < 2**48:
                raise ValueError("epoch_ms out of range")
            self._ms, self._ms_text = epoch_ms, _b32(epoch_ms, 10)
        entropy &= 2**80 - 1
        high = entropy >> 20
        if high != self._high:
            self._high, self._high_text = high, _b32(high, 12)
        return NotificationId(self._ms_text + self._high_text + _PAIRS[(entropy >> 10) & 1023] + _PAIRS[entropy & 1023])


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
