"""A local emulator of FCM's HTTP v1 API and Google's OAuth2 token endpoint for the tests (HTTP/2 over TLS).

`POST /token` takes a service account's JWT assertion (RFC 7523): its RS256 signature
checked with the account's public key, iss, aud (this endpoint), scope and a lifetime of
at most an hour; it answers `{"access_token", "expires_in", "token_type"}` or 400
`{"error": "invalid_grant", "error_description"}`. `POST /v1/projects/{project}/messages:send`
takes a Bearer access token it issued (401 UNAUTHENTICATED otherwise) and validates the
message as FCM does (a token; string data values; android.priority HIGH or NORMAL;
android.ttl as "<seconds>s"), answering `{"name": "projects/p/messages/n"}`, or a
google.rpc error: `{"error": {"code", "message", "status", "details": [{"@type":
"type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode"}]}}`. Tokens in
`unregistered` answer 404 UNREGISTERED; `script` answers come first, in turn, and
`by_token` holds answers for one device token.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.providers.asgi_server import Answer

PROJECT = "herald-test"
CLIENT_EMAIL = "herald@herald-test.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_KEY_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()


def service_account(token_uri: str, key_pem: str = PRIVATE_KEY_PEM) -> str:
    """The JSON key file of the test's service account (what an operator downloads from the console)."""
    return json.dumps({"type": "service_account", "project_id": PROJECT, "private_key_id": "k1", "private_key": key_pem,
                       "client_email": CLIENT_EMAIL, "client_id": "1", "token_uri": token_uri})


def fcm_error(status: int, rpc_status: str, message: str, error_code: str | None = None, **headers: str) -> Answer:
    details: list[dict[str, Any]] = []
    if error_code is not None:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
    return Answer(status, {"error": {"code": status, "message": message, "status": rpc_status, "details": details}},
                  {k.replace("_", "-"): v for k, v in headers.items()})


def _invalid(message: str, field_name: str) -> Answer:
    answer = fcm_error(400, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT")
    assert answer.body is not None
    answer.body["error"]["details"].insert(0, {"@type": "type.googleapis.com/google.rpc.BadRequest",
                                               "fieldViolations": [{"field": field_name, "description": message}]})
    return answer


@dataclass
class FcmEmulator:
    url: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    unregistered: set[str] = field(default_factory=set)
    script: list[Answer] = field(default_factory=list)
    by_token: dict[str, list[Answer]] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # access tokens, in order
    assertions: list[dict[str, Any]] = field(default_factory=list)  # the verified claims of each token request
    versions: list[str] = field(default_factory=list)  # each messages:send request's HTTP version
    sends: int = 0
    expires_in: int = 3599

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes, http_version: str) -> Answer:
        if method == "POST" and path == "/token":
            return self._token(body)
        match = re.fullmatch(r"/v1/projects/([^/]+)/messages:send", path)
        if method != "POST" or match is None:
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.")
        self.sends += 1
        self.versions.append(http_version)
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.issued:
            return fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.")
        if match.group(1) != PROJECT:
            return fcm_error(403, "PERMISSION_DENIED", f"Permission denied on resource project {match.group(1)}.")
        try:
            message = json.loads(body)["message"]
        except (ValueError, KeyError, TypeError):
            return _invalid("Invalid JSON payload received.", "message")
        token = message.get("token") if isinstance(message, dict) else None
        if not isinstance(token, str) or not token:
            return _invalid("Recipient of the message is not set.", "message.token")
        if self.script:
            return self.script.pop(0)
        if self.by_token.get(token):
            return self.by_token[token].pop(0)
        problem = self._problem(message)
        if problem is not None:
            return problem
        if json.loads(body).get("validate_only") is True:  # checked, not sent (herald providers check)
            return Answer(200, {"name": f"projects/{PROJECT}/messages/fake_message_id"})
        if token in self.unregistered:
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        self.accepted.append(message)
        return Answer(200, {"name": f"projects/{PROJECT}/messages/{len(self.accepted)}"})

    def _problem(self, message: dict[str, Any]) -> Answer | None:
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return _invalid("Invalid value at 'message.data' (Map), expected a string.", "message.data")
        android = message.get("android", {})
        if android.get("priority", "NORMAL") not in ("HIGH", "NORMAL"):
            return _invalid(f"Invalid value at 'message.android.priority': {android.get('priority')}", "message.android.priority")
        if "ttl" in android and not re.fullmatch(r"\d+(\.\d{1,9})?s", str(android["ttl"])):
            return _invalid("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)", "message.android.ttl")
        notification = message.get("notification", {})
        if not isinstance(notification, dict) or set(notification) - {"title", "body", "image"}:
            return _invalid("Invalid JSON payload received. Unknown name in 'message.notification'", "message.notification")
        return None

    def _token(self, body: bytes) -> Answer:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Answer(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        try:
            claims = jwt.decode(form.get("assertion", ""), _KEY.public_key(), algorithms=["RS256"], audience=self.token_url,
                                options={"require": ["iss", "aud", "iat", "exp"]})
        except jwt.PyJWTError as exc:
            return Answer(400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {type(exc).__name__}"})
        if claims["iss"] != CLIENT_EMAIL or claims.get("scope") != SCOPE or claims["exp"] - claims["iat"] > 3600:
            return Answer(400, {"error": "invalid_grant", "error_description": "Invalid JWT claims."})
        self.assertions.append(claims)
        token = "ya29." + secrets.token_urlsafe(24)
        self.issued.append(token)
        return Answer(200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})
