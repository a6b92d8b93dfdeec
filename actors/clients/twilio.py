"""SMS through Twilio's Programmable Messaging API (`POST /2010-04-01/Accounts/{sid}/Messages.json`), over
HTTP/1.1 keep-alive connections (actors/clients/http1.py).

HTTP Basic auth with the account SID and auth token; a form body with To (the delivery's
E.164 number), From or MessagingServiceSid, and Body. 201 is Sent (status `sent`, the
message SID in the detail). An error answer is Twilio's JSON `{"code", "message",
"more_info", "status"}`; its code decides the verdict (docs/providers.md "Twilio").
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec

from protocol.lifecycle import Status
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent

from .http1 import basic_auth
from .http1_wire import form_urlencoded
from .http_api import MAX_ANSWER, http_client, retry_after_s, text_of, transport_failure
from .http_errors import TransportError
from .provider_config import TwilioProvider

THROTTLE_WAIT_S = 1.0  # a 429 without Retry-After (Twilio's usual): the queue's concurrency frees within a moment
# 400s that are the account's configuration, not this message: the provider's failure (retried; the breaker counts them)
CONFIG_CODES = frozenset({
    21212,  # invalid From number
    21606,  # the From number cannot send SMS (or is not this account's)
    21659,  # the From is not a Twilio number
    21701, 21702, 21703, 21704, 21705,  # the messaging service is missing or has no sender
})


def error_of(body: bytes) -> tuple[int | None, str]:
    """Twilio's error code and message ("21211", "The 'To' number ... is not a valid phone number.")."""
    try:
        error = msgspec.json.decode(body)
        code = error.get("code")
        return (code if isinstance(code, int) else None), str(error.get("message", ""))[:300]
    except Exception:
        return None, text_of(body)


def verdict(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """The verdict of one answer of the Messages API (pure: tested row by row in tests/providers/test_twilio.py)."""
    if status in (200, 201):
        try:
            sid = str(msgspec.json.decode(body).get("sid", "-"))[:64]
        except Exception:
            sid = "-"
        return Sent(Status.SENT, detail=f"twilio: {status} {sid}")
    code, message = error_of(body)
    error = f"twilio: {status} {code if code is not None else '-'}: {message}"
    if status == 429 or code == 20429:
        return RetryLater(error, after_s=retry_after_s(headers) or THROTTLE_WAIT_S, throttled=True)
    if status in (400, 413) and code not in CONFIG_CODES:  # the recipient or the message: this delivery cannot succeed
        return PermanentFailure(error)
    return RetryLater(error, after_s=retry_after_s(headers) if status >= 500 else None)  # 401/403/404 (account), 5xx, config


class TwilioClient:
    """SMS through Twilio (a ChannelClient)."""

    def __init__(self, settings: TwilioProvider, status_callback: str = "") -> None:
        self.settings = settings
        self.status_callback = status_callback  # where Twilio posts the message's statuses (receipts), if set
        self.url = f"{settings.base_url.rstrip('/')}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"
        self._http = http_client(settings.timeout_s, settings.max_connections, settings.ca_file, http2=False)
        # What every request has in common, made once: its pool and target, its headers, the sender in its form
        parts = urlsplit(self.url)
        if not parts.hostname:
            raise ValueError(f"twilio: not an absolute URL: {settings.base_url!r}")
        self._pool = self._http.pool(parts.scheme, parts.hostname, parts.port)
        self._target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._headers = [("Content-Type", "application/x-www-form-urlencoded"),
                         ("Authorization", basic_auth(settings.account_sid, settings.auth_token.reveal()))]
        sender = ("From", settings.from_number) if settings.from_number else ("MessagingServiceSid", settings.messaging_service_sid)
        self._sender = b"&" + form_urlencoded([sender])

    async def send(self, delivery: Delivery) -> Outcome:
        sms = delivery.content.sms
        if sms is None or not delivery.address:
            return PermanentFailure("twilio: no sms content or number", dead_letter=True)
        body = form_urlencoded([("To", delivery.address), ("Body", sms.text)]) + self._sender
        if self.status_callback:  # the receipt names the notification: ?n=<id> (actors/api/webhooks.py)
            body += b"&" + form_urlencoded([("StatusCallback", f"{self.status_callback}?n={delivery.notification_id}")])
        try:
            status, headers, answer = await self._pool.request("POST", self._target, self._headers, body, MAX_ANSWER)
        except TransportError as exc:
            return transport_failure("twilio", exc)
        return verdict(status, headers, answer)

    async def aclose(self) -> None:
        await self._http.aclose()
