"""The webhook channel's client: an HMAC-signed POST to the user's URL, Standard Webhooks style.

Headers (https://www.standardwebhooks.com/, the spec's "Signature scheme"):
- `webhook-id`: the notification id, the same on every retry of the delivery (the receiver's dedup key);
- `webhook-timestamp`: unix seconds when this attempt was signed;
- `webhook-signature`: `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per configured key,
  separated by spaces (while a secret is rotated, receivers holding either key verify).

The key is the deployment's, or with `endpoint_keys` each endpoint's own, derived from it (`endpoint_key`): an
endpoint's owner can then verify Herald's POSTs to it and sign nothing another endpoint accepts.

The body is the notification as JSON (`payload`). A URL starting with one of the provider's
`slack_prefixes` is a Slack incoming webhook: it gets `{"text": ...}` and no signature
headers (Slack reads none; its URL is the secret). Every connection goes through the SSRF
guard (actors/clients/ssrf.py); the answer is read up to `max_answer_bytes`; no redirect
is followed. The verdict of each answer is in docs/providers.md ("Webhook").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import msgspec

from protocol.content import WebhookContent
from protocol.lifecycle import Status
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent
from protocol.webhook_url import url_problem
from reactor.clock import iso, wall_ms

from .http_api import Answer, call, http_client, retry_after_s, text_of, transport_failure
from .endpoint_breakers import EndpointBreakers, origin
from .http_errors import TransportError
from .provider_config import WebhookProvider
from .ssrf import ForbiddenAddress, Guard, Resolver, parse_cidrs

_encode = msgspec.json.Encoder().encode
EVENT_TYPE = "notification"
USER_AGENT = "Herald-Webhooks/1"


ENDPOINT_KEY_LABEL = b"herald webhook endpoint key\x00"  # what an endpoint's key is derived under (docs/providers.md)


def endpoint_key(deployment_key: bytes, url: str) -> bytes:
    """The key of one endpoint: HMAC-SHA256(the deployment's key, label + the URL's UTF-8 bytes), exactly as given."""
    return hmac.new(deployment_key, ENDPOINT_KEY_LABEL + url.encode(), hashlib.sha256).digest()


def endpoint_secrets(deployment_keys: Sequence[bytes], url: str) -> list[str]:
    """What an endpoint's owner verifies with: one `whsec_` secret per deployment key (the current one first)."""
    return ["whsec_" + base64.b64encode(endpoint_key(key, url)).decode() for key in deployment_keys]


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256>` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys)


def payload(delivery: Delivery, content: WebhookContent) -> bytes:
    """The POST's JSON body: the event's type and time, and the notification."""
    data: dict[str, Any] = {
        "notification_id": delivery.notification_id, "user_id": delivery.user_id, "priority": delivery.priority.value,
        "title": content.title, "body": content.body, "data": content.data,
    }
    if delivery.category is not None:
        data["category"] = delivery.category
    return _encode({"type": EVENT_TYPE, "timestamp": iso(delivery.created_ms), "data": data})


def slack_payload(content: WebhookContent) -> bytes:
    """A Slack incoming webhook's message: the title in bold, then the body (Slack's mrkdwn; &, <, > escaped)."""
    def escape(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    text = f"*{escape(content.title)}*" + (f"\n{escape(content.body)}" if content.body else "")
    return _encode({"text": text})


class WebhookClient:
    """One webhook provider: its keys, its guarded HTTP client (ssrf.Guard), its verdicts."""

    def __init__(self, spec: WebhookProvider, resolver: Resolver | None = None) -> None:
        self.spec = spec
        self.guard = Guard(parse_cidrs(spec.allow_cidrs), resolver)
        self.http = http_client(spec.timeout_s, spec.max_connections, spec.ca_file, http2=False, connect=self.guard.connect)
        self.breakers = EndpointBreakers(spec.endpoint_breaker, max_endpoints=spec.max_endpoint_breakers)

    async def aclose(self) -> None:
        await self.http.aclose()

    def keys_for(self, url: str) -> Sequence[bytes]:
        """The keys a POST to `url` is signed with: the deployment's, or (endpoint_keys) the URL's own derived from them."""
        if self.spec.endpoint_keys:
            return [endpoint_key(key, url) for key in self.spec.secrets]
        return self.spec.secrets

    def is_slack(self, url: str) -> bool:
        return url.startswith(self.spec.slack_prefixes)

    async def send(self, delivery: Delivery) -> Outcome:
        url = delivery.address
        content = delivery.content.webhook
        if content is None or not url:
            return PermanentFailure("webhook: no webhook content or URL", dead_letter=True)
        problem = url_problem(url)
        if problem is not None:  # checked when it was configured; a record from before the rule is refused here
            return PermanentFailure(f"webhook: the URL {problem}")
        headers = {"content-type": "application/json", "user-agent": USER_AGENT, "accept-encoding": "identity"}
        if self.is_slack(url):
            body = slack_payload(content)
        else:
            body = payload(delivery, content)
            timestamp = wall_ms() // 1000
            headers.update({
                "webhook-id": delivery.notification_id, "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self.keys_for(url), delivery.notification_id, timestamp, body),
            })
        server = origin(url)
        if not self.breakers.admit(server):
            return RetryLater(f"webhook: {server} is failing: its circuit is open, not called", recipient=True)
        health = self.breakers.released  # the call's word on the endpoint's health: none until it answers or fails
        try:
            try:
                answer = await call(self.http, "POST", url, content=body, headers=headers, limit=self.spec.max_answer_bytes)
            except ForbiddenAddress as exc:  # no connection made: the URL's fault, not the endpoint's health
                return PermanentFailure(f"webhook: {exc}")
            except TransportError as exc:
                health = self.breakers.failed
                # the user's endpoint failing, not the channel: no failure for the channel's breaker
                return msgspec.structs.replace(transport_failure("webhook", exc), recipient=True)
            if answer.status >= 500:
                health = self.breakers.failed
            elif answer.status != 429:  # a 2xx, 3xx or 4xx: the endpoint is up (a 429: its rate, not its health)
                health = self.breakers.succeeded
            return verdict(answer, url)
        finally:
            health(server)


def verdict(answer: Answer, url: str) -> Outcome:
    """What an endpoint's answer means (docs/providers.md "Webhook")."""
    status = answer.status
    said = f"webhook: {status}" + (f": {text_of(answer.body)}" if answer.body else "")
    if 200 <= status < 300:
        return Sent(Status.SENT, f"webhook: {status}")
    if status == 410:  # Gone: the endpoint asks to be forgotten; the user's URL is removed (as an unregistered device)
        return PermanentFailure(f"{said} (the endpoint is gone: removed from the user's contact points)", unregistered_tokens=[url])
    if status == 429:
        # this endpoint's rate, not Herald's: no breaker failure, and the other users' webhooks are not held (`recipient`)
        return RetryLater(said, after_s=retry_after_s(answer.headers), throttled=True, recipient=True)
    if 300 <= status < 400:
        location = answer.headers.get("location", "")[:200]
        return PermanentFailure(f"webhook: {status} redirect not followed" + (f" (to {location})" if location else ""))
    if 400 <= status < 500:
        return PermanentFailure(said)
    # the user's endpoint failing, not the channel: its own breaker counts it (EndpointBreakers), not the channel's
    return RetryLater(said, after_s=retry_after_s(answer.headers), recipient=True)
