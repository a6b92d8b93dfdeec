"""API keys, pure: their format, what is stored of them, and who a request is from.

An API key is `hk_<key_id>_<secret>`: a 12-hex-digit id, stored in clear, and a 256-bit
secret of which only `sha256(key_id ":" secret)` is stored (a high-entropy secret needs
neither a salt nor a slow hash). Each key lists its scopes (protocol.keys.Scope; none
implies another), a name, its rate limit (or the node's default) and, once revoked, when.
actors/services/credentials.py checks presented keys against the KeyStore.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from protocol.keys import KEY_PREFIX, Scope

ALL_SCOPES = frozenset(s.value for s in Scope)
_KEY_RE = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{12}})_([0-9a-f]{{64}})$")


def bearer(header: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, if there is one."""
    if not header or not header.startswith("Bearer "):
        return None
    credential = header[7:].strip()
    return credential or None


def new_api_key() -> tuple[str, str]:
    """A fresh (key_id, full key `hk_<key_id>_<secret>`)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_hex(32)}"


def parse_api_key(text: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed `hk_` key, else None."""
    match = _KEY_RE.match(text)
    return None if match is None else (match.group(1), match.group(2))


def key_digest(key_id: str, secret: str) -> bytes:
    """What the store keeps of a key's secret."""
    return hashlib.sha256(f"{key_id}:{secret}".encode()).digest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request is from: an authenticated API key and what it may do."""

    key_id: str
    scopes: frozenset[str]
    rate_per_s: float | None  # None: not rate limited (the bootstrap key)
    burst: float | None
    bootstrap: bool = False  # the node's configured or generated bootstrap key
