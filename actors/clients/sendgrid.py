"""Email through SendGrid's v3 Mail Send API (`POST /v3/mail/send`), over HTTP/1.1 keep-alive
connections on Trio (actors/clients/http1.py).

The message is checked by the same builder as the outbox and SMTP
(actors/clients/sandbox.render_email: a header the email package refuses dead-letters the
delivery); what SendGrid gets is its JSON form: from, one personalization with the
recipient, the subject, text and html parts, the List-Unsubscribe headers, and the
notification id as a custom arg (it comes back in SendGrid's event webhook).

Verdicts (docs/providers.md): 202 is Sent (status `sent`, the X-Message-Id in the detail);
400 and 413 (the request's content) are PermanentFailure; 401 and 403 (the key) and every
5xx, timeout or connection error are RetryLater, which the gate counts as the provider's
failure; 429 is throttled (RetryLater.throttled) after the X-RateLimit-Reset or Retry-After it gives.
"""

from __future__ import annotations

import math
from email.utils import parseaddr

import msgspec

from protocol.header_safe import mailbox_problem
from protocol.lifecycle import Status
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent
from reactor.clock import wall_ms

from .http_api import Answer, call, http_client, transport_failure
from .http_errors import TransportError
from .provider_config import SendgridProvider
from .sandbox import render_email

MAX_ERROR_BODY = 4096  # of an error answer, read into the verdict's text (the rest is dropped)


def mail_body(delivery: Delivery, sender: str) -> dict[str, object]:
    """The /v3/mail/send request for a delivery whose message render_email accepted."""
    content = delivery.content.email
    assert content is not None and delivery.address is not None
    name, address = parseaddr(sender)
    parts = [{"type": "text/plain", "value": content.text or ""}]
    if content.html:
        parts.append({"type": "text/html", "value": content.html})
    body: dict[str, object] = {
        "personalizations": [{"to": [{"email": parseaddr(delivery.address)[1]}]}],
        "from": {"email": address, **({"name": name} if name else {})},
        "subject": content.subject,
        "content": parts,
        "custom_args": {"herald_notification_id": delivery.notification_id},
    }
    if delivery.unsubscribe_url:
        body["headers"] = {"List-Unsubscribe": f"<{delivery.unsubscribe_url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    return body


def _errors(body: bytes) -> str:
    """SendGrid's {"errors": [{"message", "field"}]} as one line (or the start of whatever the body is)."""
    text = body[:MAX_ERROR_BODY]
    try:
        errors = msgspec.json.decode(text)["errors"]
        return "; ".join(f"{e.get('field') or '-'}: {e.get('message')}" for e in errors)[:500]
    except Exception:
        return text.decode("utf-8", "replace")[:200]


def _wait_s(response: Answer) -> float | None:
    """How long a 429 asks to wait: Retry-After (seconds) or X-RateLimit-Reset (a Unix time), bounded to an hour."""
    retry_after, reset = response.headers.get("retry-after"), response.headers.get("x-ratelimit-reset")
    try:
        if retry_after is not None:
            wait = float(retry_after)
        elif reset is not None:
            wait = float(reset) - wall_ms() / 1000
        else:
            return None
    except ValueError:
        return None
    return min(3600.0, max(0.0, wait)) if math.isfinite(wait) else None


class SendgridClient:
    """Email through SendGrid (a ChannelClient)."""

    def __init__(self, settings: SendgridProvider, sender: str) -> None:
        problem = mailbox_problem(sender)
        if problem is not None:
            raise ValueError(f"email sender {sender!r}: {problem}")
        self.settings = settings
        self.sender = sender
        self.url = settings.base_url.rstrip("/") + "/v3/mail/send"
        self._http = http_client(settings.timeout_s, settings.max_connections, None, http2=False)

    async def send(self, delivery: Delivery) -> Outcome:
        checked = render_email(delivery, self.sender)  # the same checks as the outbox's and SMTP's message
        if isinstance(checked, PermanentFailure):
            return checked
        headers = {"Authorization": f"Bearer {self.settings.api_key.reveal()}"}
        try:  # an answer is read up to MAX_ERROR_BODY, whatever its size; the whole call is bounded (http_api.call)
            response = await call(self._http, "POST", self.url, limit=MAX_ERROR_BODY, json=mail_body(delivery, self.sender),
                                  headers=headers)
        except TransportError as exc:
            return transport_failure("sendgrid", exc)
        body, status = response.body, response.status
        if status in (200, 202):
            return Sent(Status.SENT, detail=f"sendgrid: {status} X-Message-Id {response.headers.get('x-message-id', '-')}"[:300])
        error = f"sendgrid: {status}: {_errors(body)}"
        if status == 429:  # its rate, not its health: the gate waits, the breaker does not count it
            return RetryLater(error, after_s=_wait_s(response), throttled=True)
        if status in (400, 413):  # the request's content: this delivery cannot succeed as it is
            return PermanentFailure(error)
        return RetryLater(error)  # 401/403 (the key), 5xx and anything else: the provider's failure
