"""Push through the Apple Push Notification service over HTTP/2 (actors/clients/http2.py), with a provider token.

`POST {base_url}/3/device/{token}`, one request per device token (actors/clients/push.py
sends a delivery's tokens at once, on one HTTP/2 connection), authorized with a provider
token: a JWT signed ES256 with the team's .p8 key (header kid = key_id; claims iss =
team_id, iat). Apple refuses a token older than an hour and one renewed within 20 minutes
(TooManyProviderTokenUpdates): `ProviderToken` makes one every `token_refresh_s` (default
40 minutes, checked to lie within 20-60) and again once on ExpiredProviderToken.

Headers from the notification: apns-topic (the bundle id), apns-push-type `alert` (Herald's
push content always has a title: a visible notification), apns-priority 10 (send now) for
critical and high notifications, 5 (as the device's power allows) for normal and low,
apns-expiration now + ttl_s, apns-collapse-id the notification id (a retried duplicate
replaces the first on the device), apns-id a UUID from the notification id. Verdicts:
docs/providers.md "APNs".
"""

from __future__ import annotations

import hashlib
import re
import uuid
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

from .http_api import call, http_client, retry_after_s, text_of, transport_failure
from .http_errors import TransportError
from .provider_config import ApnsProvider
from .push import each_token, unregistered

MAX_COLLAPSE_ID = 64  # bytes (Apple's limit)
GONE = frozenset({"BadDeviceToken", "Unregistered", "ExpiredToken"})  # the token is removed
_HEX_TOKEN = re.compile(r"[0-9A-Fa-f]{32,200}")
_NAMESPACE = uuid.UUID("6f0c5b1e-52c4-4d38-9a55-3b1f0c1e2a70")  # apns-id = uuid5(this, notification id)


def apns_id(notification_id: str) -> str:
    """`str(uuid.uuid5(_NAMESPACE, notification_id))` without the UUID object (a tenth of a push request's CPU):
    the same id on every attempt, so Apple's answers name the notification."""
    digest = bytearray(hashlib.sha1(_NAMESPACE.bytes + notification_id.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class ProviderToken:
    """The ES256 provider token, made again every `token_refresh_s` (Trio's clock) or when Apple calls it expired."""

    def __init__(self, settings: ApnsProvider) -> None:
        self.settings = settings
        self._key = load_pem_private_key(settings.key.reveal().encode(), password=None)
        self._token: str | None = None
        self._made_at = 0.0
        self.made = 0

    def get(self) -> str:
        if self._token is None or trio.current_time() - self._made_at >= self.settings.token_refresh_s:
            self._token = jwt.encode({"iss": self.settings.team_id, "iat": wall_ms() // 1000}, self._key,  # type: ignore[arg-type]
                                     algorithm="ES256", headers={"kid": self.settings.key_id})
            self._made_at = trio.current_time()
            self.made += 1
        return self._token

    def expired(self, token: str) -> None:
        """Apple said ExpiredProviderToken: the next get makes a new one (if no other send did already)."""
        if self._token == token:
            self._token = None


def request(delivery: Delivery, topic: str, ttl_s: int) -> tuple[dict[str, str], dict[str, Any]]:
    """The headers (but authorization) and the JSON payload for one notification (pure)."""
    push = delivery.content.push
    assert push is not None
    headers = {
        "apns-topic": topic,
        "apns-push-type": "alert",
        "apns-priority": "10" if delivery.priority.lane is Lane.CRITICAL else "5",
        "apns-expiration": str(wall_ms() // 1000 + ttl_s),
        "apns-id": apns_id(delivery.notification_id),
    }
    if len(delivery.notification_id.encode()) <= MAX_COLLAPSE_ID:
        headers["apns-collapse-id"] = delivery.notification_id
    alert = {"title": push.title, **({"body": push.body} if push.body else {})}
    payload = {**push.data, "herald_notification_id": delivery.notification_id, "aps": {"alert": alert}}
    return headers, payload


def reason_of(body: bytes) -> tuple[str, int | None]:
    """Apple's `reason` and, for 410, its `timestamp` (ms: when the token stopped being valid)."""
    try:
        error = msgspec.json.decode(body)
        stamp = error.get("timestamp")
        return str(error.get("reason", "-"))[:100], stamp if isinstance(stamp, int) else None
    except Exception:
        return text_of(body, 100) or "-", None


def verdict(token: str, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """One token's verdict from APNs's answer (pure; the table in docs/providers.md)."""
    if status == 200:
        return Sent(Status.SENT, detail=f"apns: 200 apns-id {headers.get('apns-id', '-')}"[:200])
    reason, stamp = reason_of(body)
    error = f"apns: {status} {reason}" + (f" (since {stamp})" if stamp is not None else "")
    if reason in GONE or status == 410:
        return unregistered("apns", token, error)
    if status == 429:  # TooManyRequests: too many to this one device; not the provider's health, nor its rate
        return RetryLater(error, after_s=retry_after_s(headers), throttled=True)
    if status in (400, 413):  # the payload or headers (DeviceTokenNotForTopic: another app's token, kept)
        return PermanentFailure(error)
    return RetryLater(error, after_s=retry_after_s(headers) if status >= 500 else None)  # 403 (the key), 404/405, 5xx


class ApnsClient:
    """Push through APNs (a ChannelClient)."""

    def __init__(self, settings: ApnsProvider) -> None:
        self.settings = settings
        self.base = settings.base_url.rstrip("/") + "/3/device/"
        self.http = http_client(settings.timeout_s, settings.max_connections, settings.ca_file, http2=True)
        self.token = ProviderToken(settings)

    async def send(self, delivery: Delivery) -> Outcome:
        if delivery.content.push is None:
            return PermanentFailure("apns: no push content", dead_letter=True)
        return await each_token(delivery, lambda device: self._send_one(delivery, device))

    async def _send_one(self, delivery: Delivery, device: str) -> Outcome:
        if not _HEX_TOKEN.fullmatch(device):  # not an APNs token (an FCM one?): refused, kept, and never put in a URL path
            return PermanentFailure(f"apns: {device[:8]}… is not an APNs device token (hex)")
        headers, payload = request(delivery, self.settings.topic, self.settings.ttl_s)
        for _ in range(2):  # a second time only after ExpiredProviderToken, with a new token
            provider_token = self.token.get()
            try:
                answer = await call(self.http, "POST", self.base + device, json=payload,
                                    headers={**headers, "authorization": f"bearer {provider_token}"})
            except TransportError as exc:
                return transport_failure("apns", exc)
            if answer.status == 403 and reason_of(answer.body)[0] == "ExpiredProviderToken":
                self.token.expired(provider_token)
                continue
            break
        return verdict(device, answer.status, answer.headers, answer.body)

    async def aclose(self) -> None:
        await self.http.aclose()
