"""API keys and subscriber tokens.

A subscriber token is `base64url(json {"u": user_id, "exp": ms}) "." base64url(hmac_sha256)`,
signed with the node's secret; it lets a browser or app open a WebSocket for one user
until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InvalidToken(Exception):
    pass


def issue_token(secret: bytes, user_id: str, expires_ms: int) -> str:
    body = _b64(json.dumps({"u": user_id, "exp": expires_ms}, separators=(",", ":")).encode())
    signature = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def verify_token(secret: bytes, token: str, now_ms: int) -> str:
    """The user id the token was issued for; InvalidToken if tampered with or expired."""
    try:
        body, signature = token.split(".")
        expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise InvalidToken("bad signature")
        claims = json.loads(_unb64(body))
        user_id, expires = claims["u"], claims["exp"]
    except InvalidToken:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(user_id, str) or not isinstance(expires, int):
        raise InvalidToken("malformed token")
    if expires <= now_ms:
        raise InvalidToken("token expired")
    return user_id


def api_key_matches(configured: str, header: str | None) -> bool:
    """`Authorization: Bearer <key>` against the configured key, in constant time."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(configured.encode(), header[7:].strip().encode())
