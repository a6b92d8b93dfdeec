"""Channel limits: what a channel's provider takes, measured (SMS segments and encoding, push payload bytes).

Templates refuse content past them (rendering.py); the figures are the providers' own.
"""

from __future__ import annotations

import msgspec

from protocol.content import PushContent
from protocol.template_schemas import SmsInfo

PUSH_MAX_BYTES = 4096  # APNs' and FCM's payload limit, on the JSON of title, body and data
WEB_DATA_MAX_BYTES = 16_384  # the JSON of a web part's rendered `data` (it goes on every frame and inbox row)
SMS_MAX_SEGMENTS = 10


GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")  # sent as ESC + a character: two septets


def sms_info(text: str, max_segments: int = SMS_MAX_SEGMENTS) -> SmsInfo:
    """Encoding and segment count of an SMS: GSM-7 160/153 septets, else UCS-2 70/67 code units.

    A concatenated message never splits an escape pair or a surrogate pair across
    segments, as handsets and carriers do, so a segment may carry one unit fewer.
    """
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        encoding, single, multi = "GSM-7", 160, 153
        sizes = [2 if c in GSM7_EXTENDED else 1 for c in text]
    else:
        encoding, single, multi = "UCS-2", 70, 67
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
    units = sum(sizes)
    if units <= single:
        return SmsInfo(encoding, len(text), units, 1, single, max_segments)
    segments, used = 1, 0
    for size in sizes:
        if used + size > multi:
            segments, used = segments + 1, 0
        used += size
    return SmsInfo(encoding, len(text), units, segments, multi, max_segments)


def push_payload_bytes(content: PushContent) -> int:
    """Size of the JSON a push provider gets: {"title", "body", "data"}, UTF-8."""
    return len(msgspec.json.encode({"title": content.title, "body": content.body, "data": content.data}))
