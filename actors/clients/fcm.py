"""Push through Firebase Cloud Messaging's HTTP v1 API, over HTTP/2 (actors/clients/http2.py).

`POST {base_url}/v1/projects/{project_id}/messages:send`, one request per device token
(actors/clients/push.py sends a delivery's tokens at once; HTTP/2 carries them on one
connection), authorized with an OAuth2 access token. The token (`AccessTokens`) comes from
the service account's token endpoint for a JWT assertion signed RS256 with its key (RFC
7523), is cached, and is fetched again REFRESH_MARGIN_S before it expires (one fetch at a
time; the sends that need it wait for that one). An answer of 401 drops it.

The message: `notification` (title, body), `data` (the push content's data and the
notification id), `android` (priority HIGH for critical and high notifications, else
NORMAL; ttl; the notification id as collapse_key, so a retried duplicate replaces the first
on the device) and `apns` headers (apns-priority 10 or 5, apns-expiration, apns-collapse-id)
for iOS devices reached through FCM. Verdicts: docs/providers.md "FCM".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jwt
import msgspec
import trio
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from protocol.channels import Lane
from protocol.lifecycle import Status
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent
from reactor.clock import wall_ms

from .http_api import HttpClients, call, http_client, retry_after_s, text_of, transport_failure
from .http_errors import TransportError
from .provider_config import FcmProvider
from .push import each_token, unregistered

log = logging.getLogger("herald.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
ASSERTION_LIFETIME_S = 3600  # Google's longest
REFRESH_MARGIN_S = 300.0  # a cached access token is replaced this long before it expires
QUOTA_WAIT_S = 60.0  # QUOTA_EXCEEDED without Retry-After: FCM asks for at least a minute
MAX_COLLAPSE_KEY = 64


class TokenError(Exception):
    """The token endpoint refused or failed (its text: the status and Google's error, never the assertion)."""


class AccessTokens:
    """The service account's OAuth2 access token: fetched with a signed assertion, cached until REFRESH_MARGIN_S before expiry."""

    def __init__(self, settings: FcmProvider, http: HttpClients) -> None:
        self.settings = settings
        self.http = http
        self._key = load_pem_private_key(settings.private_key.reveal().encode(), password=None)
        self._token: str | None = None
        self._refresh_at = 0.0  # Trio time
        self._lock = trio.Lock()
        self.fetched = 0

    def assertion(self) -> str:
        now = wall_ms() // 1000
        claims = {"iss": self.settings.client_email, "scope": SCOPE, "aud": self.settings.token_url,
                  "iat": now, "exp": now + ASSERTION_LIFETIME_S}
        headers = {"kid": self.settings.private_key_id} if self.settings.private_key_id else None
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)  # type: ignore[arg-type]

    async def get(self) -> str:
        if self._token is not None and trio.current_time() < self._refresh_at:
            return self._token
        async with self._lock:  # one fetch at a time; those waiting take its token
            if self._token is not None and trio.current_time() < self._refresh_at:
                return self._token
            asked = trio.current_time()
            form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": self.assertion()}
            try:
                answer = await call(self.http, "POST", self.settings.token_url, data=form)
            except TransportError as exc:
                raise TokenError(transport_failure("access token", exc).error) from None
            try:
                token = msgspec.json.decode(answer.body) if answer.status == 200 else {}
                value, lifetime = token["access_token"], float(token.get("expires_in", 3600))
                if not isinstance(value, str) or not value:
                    raise ValueError("no access_token")
            except Exception:
                raise TokenError(f"access token: {answer.status} {_oauth_error(answer.body)}") from None
            self.fetched += 1
            self._token = value
            self._refresh_at = asked + max(0.0, lifetime - REFRESH_MARGIN_S)
            return value

    def drop(self, token: str) -> None:
        """The API refused this token (401): the next send fetches a new one."""
        if self._token == token:
            self._token = None


def _oauth_error(body: bytes) -> str:
    try:
        error = msgspec.json.decode(body)
        return f"{error.get('error', '-')}: {error.get('error_description', '')}"[:300]
    except Exception:
        return text_of(body)


def message(delivery: Delivery, token: str, ttl_s: int) -> dict[str, Any]:
    """The v1 `messages:send` body for one device token (pure)."""
    push = delivery.content.push
    assert push is not None
    urgent = delivery.priority.lane is Lane.CRITICAL
    data = {**push.data, "herald_notification_id": delivery.notification_id}
    apns_headers = {"apns-priority": "10" if urgent else "5", "apns-expiration": str(wall_ms() // 1000 + ttl_s)}
    android: dict[str, Any] = {"priority": "HIGH" if urgent else "NORMAL", "ttl": f"{ttl_s}s"}
    if len(delivery.notification_id.encode()) <= MAX_COLLAPSE_KEY:
        android["collapse_key"] = delivery.notification_id
        apns_headers["apns-collapse-id"] = delivery.notification_id
    notification = {"title": push.title, **({"body": push.body} if push.body else {})}
    return {"message": {"token": token, "notification": notification, "data": data, "android": android,
                        "apns": {"headers": apns_headers}}}


def error_of(body: bytes) -> tuple[str, str]:
    """FCM's error code (the FcmError detail's errorCode, else the google.rpc status) and message."""
    try:
        error = msgspec.json.decode(body)["error"]
        code = str(error.get("status", "-"))
        for detail in error.get("details") or []:
            if str(detail.get("@type", "")).endswith("google.firebase.fcm.v1.FcmError") and detail.get("errorCode"):
                code = str(detail["errorCode"])
        return code, str(error.get("message", ""))[:300]
    except Exception:
        return "-", text_of(body)


def verdict(token: str, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """One token's verdict from FCM's answer (pure; the table in docs/providers.md)."""
    if status == 200:
        try:
            name = str(msgspec.json.decode(body).get("name", "-"))[:200]
        except Exception:
            name = "-"
        return Sent(Status.SENT, detail=f"fcm: {name}")
    code, text = error_of(body)
    error = f"fcm: {status} {code}: {text}"
    if code == "UNREGISTERED":  # only FCM's own word: a 404 of a wrong base_url or project must not remove every token
        return unregistered("fcm", token, error)
    if code == "QUOTA_EXCEEDED" or status == 429:
        return RetryLater(error, after_s=retry_after_s(headers) or QUOTA_WAIT_S, throttled=True)
    if code in ("INVALID_ARGUMENT", "SENDER_ID_MISMATCH") or status in (400, 413):
        # SENDER_ID_MISMATCH: the token belongs to another project. Not removed: a wrong project_id would say so of every token.
        return PermanentFailure(error)
    return RetryLater(error, after_s=retry_after_s(headers) if status >= 500 else None)  # 5xx, 401, 403: the provider's failure


class FcmClient:
    """Push through FCM HTTP v1 (a ChannelClient)."""

    def __init__(self, settings: FcmProvider) -> None:
        self.settings = settings
        self.url = f"{settings.base_url.rstrip('/')}/v1/projects/{settings.project_id}/messages:send"
        self.http = http_client(settings.timeout_s, settings.max_connections, settings.ca_file, http2=True)
        self.tokens = AccessTokens(settings, self.http)

    async def send(self, delivery: Delivery) -> Outcome:
        if delivery.content.push is None:
            return PermanentFailure("fcm: no push content", dead_letter=True)
        try:
            access = await self.tokens.get()
        except TokenError as exc:
            return RetryLater(f"fcm: {exc}")
        return await each_token(delivery, lambda token: self._send_one(delivery, token, access))

    async def _send_one(self, delivery: Delivery, token: str, access: str) -> Outcome:
        body = message(delivery, token, self.settings.ttl_s)
        try:
            answer = await call(self.http, "POST", self.url, json=body, headers={"Authorization": f"Bearer {access}"})
        except TransportError as exc:
            return transport_failure("fcm", exc)
        if answer.status == 401:
            self.tokens.drop(access)
        return verdict(token, answer.status, answer.headers, answer.body)

    async def aclose(self) -> None:
        await self.http.aclose()
