"""A local emulator of APNs's provider API for the tests: HTTP/2 only, over TLS, with provider-token authentication.

`POST /3/device/{token}`: the `authorization: bearer <jwt>` checked as Apple does (ES256
with the team's key, kid = the key id, iss = the team, iat at most an hour old: 403
MissingProviderToken, InvalidProviderToken, ExpiredProviderToken), the headers (apns-topic
the app's: 400 MissingTopic / TopicDisallowed; apns-push-type: InvalidPushType;
apns-priority 5 or 10: BadPriority; apns-expiration a number: BadExpirationDate;
apns-collapse-id at most 64 bytes: BadCollapseId; apns-id a UUID: BadMessageId), the
token (64 hex digits: BadDeviceToken) and the payload (JSON with an aps dictionary:
PayloadEmpty / BadPayload..., at most 4096 bytes: 413 PayloadTooLarge). A token in
`unregistered` answers 410 Unregistered with its timestamp; 200 echoes the apns-id. Errors
are `{"reason": ...}`. A request over HTTP/1.1 is refused (APNs speaks HTTP/2 only).
`script` answers come first, in turn; `by_token` holds answers for one device token.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reactor.clock import wall_ms
from tests.providers.asgi_server import Answer

TEAM_ID = "TEAM123456"
KEY_ID = "KEY7654321"
TOPIC = "org.example.herald"
_KEY = ec.generate_private_key(ec.SECP256R1())
KEY_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def reason(status: int, why: str, **headers: str) -> Answer:
    return Answer(status, {"reason": why}, {k.replace("_", "-"): v for k, v in headers.items()})


@dataclass
class ApnsEmulator:
    url: str = ""
    accepted: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)  # token, apns-* headers, payload
    unregistered: dict[str, int] = field(default_factory=dict)  # token -> when it stopped being valid (ms)
    script: list[Answer] = field(default_factory=list)
    by_token: dict[str, list[Answer]] = field(default_factory=dict)
    provider_tokens: list[str] = field(default_factory=list)  # each distinct provider token seen, in order
    versions: list[str] = field(default_factory=list)
    not_before: int = 0  # provider tokens issued before this (s) are expired (Apple's view of an old token)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes, http_version: str) -> Answer:
        self.versions.append(http_version)
        if http_version != "2":
            return Answer(505, raw=b"APNs speaks HTTP/2 only")
        match = re.fullmatch(r"/3/device/([^/]*)", path)
        if match is None:
            return reason(404, "BadPath")
        if method != "POST":
            return reason(405, "MethodNotAllowed")
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return reason(403, "MissingProviderToken")
        problem = self._provider_token(auth[7:])
        if problem is not None:
            return problem
        token = match.group(1)
        if self.script:
            return self.script.pop(0)
        if self.by_token.get(token):
            return self.by_token[token].pop(0)
        problem = self._headers(headers) or self._payload(body)
        if problem is not None:
            return problem
        if not re.fullmatch(r"[0-9a-fA-F]{64}", token) or token == "0" * 64:  # zeros: a token APNs never issued
            return reason(400, "BadDeviceToken")
        if token in self.unregistered:
            return Answer(410, {"reason": "Unregistered", "timestamp": self.unregistered[token]})
        apns = {k: v for k, v in headers.items() if k.startswith("apns-")}
        self.accepted.append((token, apns, json.loads(body)))
        return Answer(200, None, {"apns-id": headers.get("apns-id") or str(uuid.uuid4())})

    def _provider_token(self, token: str) -> Answer | None:
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, _KEY.public_key(), algorithms=["ES256"], options={"require": ["iss", "iat"]})
        except jwt.PyJWTError:
            return reason(403, "InvalidProviderToken")
        if header.get("kid") != KEY_ID or claims["iss"] != TEAM_ID:
            return reason(403, "InvalidProviderToken")
        if claims["iat"] < self.not_before or claims["iat"] < wall_ms() // 1000 - 3600:
            return reason(403, "ExpiredProviderToken")
        if token not in self.provider_tokens:
            self.provider_tokens.append(token)
        return None

    def _headers(self, headers: dict[str, str]) -> Answer | None:
        topic = headers.get("apns-topic")
        if topic is None:
            return reason(400, "MissingTopic")
        if topic != TOPIC:
            return reason(400, "TopicDisallowed")
        if headers.get("apns-push-type") not in ("alert", "background", "voip", "complication", "fileprovider", "mdm",
                                                 "liveactivity", "pushtotalk", "location", "controls", "widgets"):
            return reason(400, "InvalidPushType")
        priority = headers.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (headers.get("apns-push-type") == "background" and priority != "5"):
            return reason(400, "BadPriority")
        if "apns-expiration" in headers and not headers["apns-expiration"].isdigit():
            return reason(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return reason(400, "BadCollapseId")
        if "apns-id" in headers:
            try:
                uuid.UUID(headers["apns-id"])
            except ValueError:
                return reason(400, "BadMessageId")
        return None

    def _payload(self, body: bytes) -> Answer | None:
        if not body:
            return reason(400, "PayloadEmpty")
        if len(body) > 4096:
            return reason(413, "PayloadTooLarge")
        try:
            payload = json.loads(body)
        except ValueError:
            return reason(400, "BadPayload")  # not one of Apple's documented reasons, but what a non-JSON body is
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return reason(400, "PayloadEmpty")
        return None
