"""The common email written directly: the bytes Python's email package writes for it, without the package.

Building an EmailMessage and writing it costs ~0.7-0.9 ms of CPU (the header registry parses every
value into a tree and folds it back); the outbox and SMTP send the same few shapes again and again.
`plain_email` writes those shapes itself when every value is in the plain case, where the package's
output is known exactly (tests/actors/test_plain_email.py compares the two byte for byte, Hypothesis
generating the values):

- the subject and the List-Unsubscribe link: printable ASCII, the header's line within 998 bytes;
- the recipient: a plain dot-atom address (protocol.header_safe's fast case, which the package keeps);
- each body part: lines within 998 bytes once encoded as UTF-8 (7bit if ASCII, else 8bit), and no line
  that could be taken for a multipart boundary.

Anything else returns None and the caller goes through the email package (actors/clients/sandbox.py
`build_email`), with its checks. The sender is checked and written by the package once per sender.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import functools
import random
import re
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from protocol.header_safe import PLAIN_ADDRESS
from protocol.messages import Delivery

MAX_LINE = 998  # RFC 5322's limit; the outbox's policy folds at it
_PLAIN_TEXT = re.compile(r"[\x20-\x7e]*")  # printable ASCII and spaces: the package writes it unchanged
_LINK = re.compile(r"[\x21-\x7e]+")
_ID = re.compile(r"[A-Za-z0-9_-]+")
_BOUNDARY_LIKE = re.compile(rb"^--===============", re.MULTILINE)  # a line the package's boundary check would look at
_BOUNDARY_DIGITS = 19  # the package's width: len(repr(sys.maxsize - 1))
_MAXSIZE = 2**63 - 1


@functools.lru_cache(maxsize=16)
def _from_line(sender: str) -> bytes:
    """The From header as the email package writes it (the sender is checked by the caller's path once)."""
    message = EmailMessage(policy=email.policy.default.clone(max_line_length=MAX_LINE))
    message["From"] = sender
    return bytes(message).rstrip(b"\n") + b"\n"


@functools.lru_cache(maxsize=4)
def _date(second: int) -> bytes:
    """The Date header's value for a wall-clock second (RFC 5322's form, as the package's format_datetime writes it)."""
    return format_datetime(dt.datetime.fromtimestamp(second, tz=dt.timezone.utc)).encode()


def _body(text: str) -> tuple[bytes, bytes] | None:
    """(Content-Transfer-Encoding, body) as the package's set_content makes them, or None outside the plain case."""
    lines = text.encode("utf-8").splitlines()
    if any(len(line) > MAX_LINE for line in lines):
        return None  # the package picks quoted-printable or base64 by a sniff: its own path
    body = b"\n".join(lines) + b"\n"
    if _BOUNDARY_LIKE.search(body):
        return None
    return (b"7bit" if body.isascii() else b"8bit"), body


def plain_email(delivery: Delivery, sender: str, now_ms: int) -> bytes | None:
    """The message bytes the email package would write for this delivery, or None if it is not in the plain case."""
    content = delivery.content.email
    address = delivery.address
    if content is None or address is None:
        return None
    subject = content.subject
    if len(subject) > MAX_LINE - len("Subject: ") or not _PLAIN_TEXT.fullmatch(subject) or "=?" in subject:
        return None
    if len(address) > 254 or not PLAIN_ADDRESS.fullmatch(address) or not _ID.fullmatch(delivery.notification_id):
        return None
    unsubscribe = delivery.unsubscribe_url
    if unsubscribe and (len(unsubscribe) > MAX_LINE - len("List-Unsubscribe: <>") or not _LINK.fullmatch(unsubscribe)
                        or "=?" in unsubscribe):
        return None
    try:
        text = _body(content.text or "")
        html = _body(content.html) if content.html else None
    except UnicodeEncodeError:  # a lone surrogate: the package's path reports it
        return None
    if text is None or (content.html and html is None):
        return None
    head = [
        _from_line(sender),
        b"To: %s\nSubject: %s\nDate: %s\nMessage-ID: %s\nX-Herald-Notification-Id: %s\n" % (
            address.encode(), subject.encode(), _date(now_ms // 1000),
            make_msgid(idstring=delivery.notification_id, domain="herald.localhost").encode(),
            delivery.notification_id.encode()),
    ]
    if unsubscribe:
        head.append(b"List-Unsubscribe: <%s>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\n" % unsubscribe.encode())
    if html is None:
        head.append(b'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: %s\nMIME-Version: 1.0\n\n' % text[0])
        head.append(text[1])
        return b"".join(head)
    boundary = b"=" * 15 + b"%0*d" % (_BOUNDARY_DIGITS, random.randrange(_MAXSIZE)) + b"=="
    head.append(b'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="%s"\n\n' % boundary)
    head.append(b'--%s\nContent-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: %s\n\n%s\n'
                % (boundary, text[0], text[1]))
    head.append(b'--%s\nContent-Type: text/html; charset="utf-8"\nContent-Transfer-Encoding: %s\nMIME-Version: 1.0\n\n%s\n'
                % (boundary, html[0], html[1]))
    head.append(b"--%s--\n" % boundary)
    return b"".join(head)
