"""Delivery receipts, pure: the providers' signatures, their events parsed, and what each means for a delivery.

SendGrid's Event Webhook: a JSON array of events, signed ECDSA P-256 / SHA-256 over the
timestamp header followed by the raw body (`X-Twilio-Email-Event-Webhook-Signature`,
base64 DER; `X-Twilio-Email-Event-Webhook-Timestamp`, Unix seconds), verified with the
base64 (DER SubjectPublicKeyInfo) key SendGrid shows. Twilio's status callback: a form,
signed `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, the URL Twilio was given +
every POST parameter sorted by name, name then value)).

Each event becomes a `Receipt`: the notification and channel it names (from the custom
arg or the callback URL Herald put in the request), the provider's message id (checked
against the one recorded at send time), the status it means (or None: nothing to record),
a detail that is the same each time the same event comes (so a receipt recorded twice adds
nothing to the timeline), and whether the address is to be marked undeliverable.
No I/O here (tests/receipts property- and row-test it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from protocol.channels import Channel
from protocol.ids import NOTIFICATION_ID_RE
from protocol.lifecycle import Status

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"
NOTIFICATION_ARG = "herald_notification_id"  # SendGrid's custom arg, and `n` in Twilio's callback URL
MAX_EVENTS = 1000  # in one SendGrid batch (it sends far fewer); more is a 422


class Refused(Exception):
    """A receipt that is not the provider's: unsigned (401), badly signed, stale or replayed (403)."""

    def __init__(self, status: int, message: str, header: str) -> None:
        super().__init__(message)
        self.status = status
        self.header = header  # the header the problem's `errors` names


class Malformed(ValueError):
    """A signed body that is not what the provider sends: a 422 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Receipt:
    provider: str  # sendgrid, twilio
    event: str  # the provider's name for it (delivered, bounce, undelivered ...)
    event_id: str  # unique per event: sg_event_id; Twilio: MessageSid:MessageStatus
    message_id: str  # what the provider answered at send time (X-Message-Id, the message SID)
    notification_id: str | None  # None: not a message Herald sent (or sent before receipts)
    channel: Channel
    status: Status | None  # what to record; None: nothing (processed, queued, sending)
    detail: str  # the same for the same event each time (the timeline keeps one row of it)
    at_ms: int
    address: str | None = None  # the recipient the provider names
    undeliverable: str | None = None  # why the address is to be marked undeliverable; None: it is not


class ReceiptCounts(msgspec.Struct, frozen=True):
    """What a receipt request did with its events (the 200's body)."""

    recorded: int = 0  # events recorded in a delivery's timeline
    duplicates: int = 0  # seen before (by event id): skipped
    unmatched: int = 0  # naming no delivery Herald sent with that message id: skipped
    ignored: int = 0  # events that record nothing (processed, queued, sending)
    marked: int = 0  # addresses marked undeliverable


# -- signatures


def load_sendgrid_key(text: str) -> object:
    """The verification key SendGrid shows (base64 DER SubjectPublicKeyInfo, or PEM); ValueError if it is not EC P-256."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

    text = text.strip()
    try:
        key = load_pem_public_key(text.encode()) if text.startswith("-----") else load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error):
        raise ValueError("expected SendGrid's verification key (base64 of an EC P-256 public key)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("expected an EC P-256 public key (SendGrid's Event Webhook verification key)")
    return key


def verify_sendgrid(keys: Iterable[object], signature: str | None, timestamp: str | None, body: bytes,
                    now_s: float, window_s: float) -> None:
    """Raise Refused unless one of `keys` signed timestamp + body, and the timestamp is within window_s of now."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if not signature or not timestamp:
        raise Refused(401, f"unsigned: {SENDGRID_SIGNATURE} and {SENDGRID_TIMESTAMP} are required",
                      SENDGRID_SIGNATURE if not signature else SENDGRID_TIMESTAMP)
    try:
        at = int(timestamp)
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise Refused(403, "badly signed: the signature or timestamp header is malformed", SENDGRID_SIGNATURE) from None
    if abs(now_s - at) > window_s:
        raise Refused(403, f"stale: the timestamp is more than {window_s:g} s from now", SENDGRID_TIMESTAMP)
    for key in keys:
        try:
            key.verify(raw, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
            return
        except (InvalidSignature, ValueError):
            continue
    raise Refused(403, "badly signed: no configured SendGrid verification key signed it", SENDGRID_SIGNATURE)


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """What Twilio puts in X-Twilio-Signature for a POST of `params` to `url`."""
    data = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def verify_twilio(tokens: Iterable[str], signature: str | None, url: str, params: list[tuple[str, str]]) -> None:
    """Raise Refused unless one of the auth `tokens` signed this URL and these parameters."""
    if not signature:
        raise Refused(401, f"unsigned: {TWILIO_SIGNATURE} is required", TWILIO_SIGNATURE)
    for token in tokens:
        if hmac.compare_digest(twilio_signature(token, url, params).encode(), signature.encode()):
            return
    raise Refused(403, "badly signed: no configured Twilio auth token signed it (for the configured public URL)", TWILIO_SIGNATURE)


def signature_digest(signature: str) -> str:
    """The replay memory's key for a signature (bounded length whatever the header held)."""
    return hashlib.sha256(signature.encode()).hexdigest()[:32]


# -- SendGrid's events

SENDGRID_HARD_DROPS = ("bounced address", "spam reporting address", "unsubscribed address", "invalid")


def _text(event: Mapping[str, object], name: str, where: str, *, required: bool = False, limit: int = 200) -> str:
    value = event.get(name)
    if value is None:
        if required:
            raise Malformed(f"{where}.{name}", "required")
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise Malformed(f"{where}.{name}", "expected a string")
    return " ".join(str(value).split())[:limit]


def _notification(value: str, where: str) -> str | None:
    if not value:
        return None
    if not NOTIFICATION_ID_RE.match(value):
        raise Malformed(where, "not a Herald notification id")
    return value


def sendgrid_meaning(event: str, kind: str, reason: str, dropped_reason: str) -> tuple[Status | None, str, str | None]:
    """(status, what happened, why the address is undeliverable or None) of one SendGrid event (the mapping table)."""
    if event == "delivered":
        return Status.DELIVERED, "delivered", None
    if event == "bounce":
        if kind == "blocked":  # the receiving server refused for now (reputation, content): not the address's fault
            return Status.FAILED, f"blocked: {reason}", None
        return Status.FAILED, f"bounced: {reason}", f"hard bounce: {reason}"
    if event == "dropped":
        hard = dropped_reason.lower().startswith(SENDGRID_HARD_DROPS)
        return Status.FAILED, f"dropped: {dropped_reason}", (f"dropped: {dropped_reason}" if hard else None)
    if event == "deferred":
        return Status.SENT, f"deferred: {reason}", None  # still trying: a timeline row, the status stays
    if event == "open":
        return Status.OPENED, "opened", None
    if event == "click":
        return Status.OPENED, "clicked", None
    if event == "spamreport":
        return Status.DELIVERED, "spam report", "spam report"
    if event == "unsubscribe":
        return Status.DELIVERED, "unsubscribed", "unsubscribed"
    if event == "group_unsubscribe":
        return Status.DELIVERED, "unsubscribed from a group", None
    return None, event, None  # processed, group_resubscribe, and events to come: nothing to record


def parse_sendgrid(body: bytes) -> list[Receipt]:
    """The events of a signed SendGrid batch; Malformed names the first thing wrong."""
    try:
        events = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Malformed("body", f"not JSON ({exc})") from None
    except RecursionError:
        raise Malformed("body", "JSON nested too deeply") from None
    if not isinstance(events, list):
        raise Malformed("body", "expected a JSON array of events")
    if len(events) > MAX_EVENTS:
        raise Malformed("body", f"more than {MAX_EVENTS} events")
    receipts = []
    for n, event in enumerate(events):
        where = f"[{n}]"
        if not isinstance(event, dict):
            raise Malformed(where, "expected an event object")
        name = _text(event, "event", where, required=True, limit=40)
        stamp = event.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not 0 <= stamp < 1e11:
            raise Malformed(f"{where}.timestamp", "expected Unix seconds")
        event_id = _text(event, "sg_event_id", where, required=True, limit=100)
        message_id = _text(event, "sg_message_id", where, limit=200).partition(".")[0]  # <X-Message-Id>.filter...
        nid = _notification(_text(event, NOTIFICATION_ARG, where, limit=64), f"{where}.{NOTIFICATION_ARG}")
        status, what, undeliverable = sendgrid_meaning(
            name, _text(event, "type", where, limit=20), _text(event, "reason", where) or _text(event, "response", where),
            _text(event, "reason", where),
        )
        email = _text(event, "email", where, limit=254) or None
        receipts.append(Receipt("sendgrid", name, event_id, message_id, nid, Channel.EMAIL, status,
                                f"receipt: sendgrid {what} ({event_id})"[:300], int(stamp * 1000), email, undeliverable))
    return receipts


# -- Twilio's status callbacks

# ErrorCodes that say the number itself will not take messages (not a passing failure): marked undeliverable
TWILIO_HARD_CODES = {
    "21610": "the recipient replied STOP (unsubscribed)",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
}
TWILIO_STATUSES: dict[str, Status | None] = {
    "accepted": None, "queued": None, "sending": None, "scheduled": None,
    "sent": Status.SENT, "delivered": Status.DELIVERED, "read": Status.OPENED,
    "undelivered": Status.FAILED, "failed": Status.FAILED, "canceled": Status.FAILED,
}


def parse_twilio(params: list[tuple[str, str]], notification_id: str | None, now_ms: int) -> Receipt:
    """The receipt of a signed Twilio status callback; Malformed names the first thing wrong."""
    form = dict(params)
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    if not sid:
        raise Malformed("MessageSid", "required")
    if len(sid) > 64 or not sid.isalnum():
        raise Malformed("MessageSid", "expected a message SID")
    event = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if not event:
        raise Malformed("MessageStatus", "required")
    if event not in TWILIO_STATUSES:
        raise Malformed("MessageStatus", f"expected one of {', '.join(TWILIO_STATUSES)}")
    code = form.get("ErrorCode", "")[:10]
    if code and not code.isdigit():
        raise Malformed("ErrorCode", "expected a number")
    status = TWILIO_STATUSES[event]
    what = event if not code else f"{event}: error {code}" + (f" ({TWILIO_HARD_CODES[code]})" if code in TWILIO_HARD_CODES else "")
    undeliverable = f"twilio error {code}: {TWILIO_HARD_CODES[code]}" if status is Status.FAILED and code in TWILIO_HARD_CODES else None
    return Receipt("twilio", event, f"{sid}:{event}", sid, _notification(notification_id or "", "n"), Channel.SMS, status,
                   f"receipt: twilio {what} ({sid})", now_ms, form.get("To") or None, undeliverable)
