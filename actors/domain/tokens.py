"""Signed tokens, pure: the format, signing and verification, the key ring and its rotation.

A signed token is `<kid> "." base64url(json claims) "." base64url(hmac_sha256)`: the HMAC
covers the kid and the claims, under the key `kid` of the node's signing key ring
(`SigningKeys`). The current key signs; every key of the ring verifies, so a rotation
(`herald keys rotate-secret`) leaves the tokens signed before it valid until they expire.
Base64 is strict (url-safe alphabet, no padding, canonical trailing bits) and every
refusal reads the same (`TOKEN_REFUSED`): a client cannot tell an expired token from a
forged one. A token of two parts (no kid) is from before key ids and verifies only with
the migrated key `legacy`. A subscriber token's claims are {"u": user, "exp": ms} and
"w": true when the key that minted it may `send` (the token may then change the user's
inbox state, not only read it). Unsubscribe tokens (domain/preferences.py) are signed
the same way, for another purpose.

Where the ring is kept is the SigningKeyStore port's business (actors/services/credentials.py
reads and rotates it); nothing here does I/O or reads a clock: `now_ms` comes in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from protocol.keys import LEGACY_KID, SigningKey

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_KID = re.compile(r"[a-z0-9]{1,32}")

TOKEN_REFUSED = "the token is not valid: malformed, tampered with, signed with an unknown key, or expired"


class InvalidToken(Exception):
    """A refused token. str() is the same for every reason (TOKEN_REFUSED); `reason` is for logs and tests."""

    def __init__(self, reason: str) -> None:
        super().__init__(TOKEN_REFUSED)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict base64url: only the url-safe alphabet, no padding, and only the canonical encoding of its bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidToken("not canonical base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # non-zero trailing bits: another text for the same bytes
        raise InvalidToken("not canonical base64url")
    return data


def _derive(secret: bytes, purpose: bytes) -> bytes:
    """The key for one kind of token: the secret itself (subscriber tokens) or one derived for `purpose`."""
    return hmac.new(secret, purpose, hashlib.sha256).digest() if purpose else secret


def new_signing_key(now_ms: int, taken: Iterable[str] = ()) -> SigningKey:
    """A fresh 256-bit signing key with a kid none of `taken` has."""
    used = set(taken)
    while True:
        kid = secrets.token_hex(4)
        if kid not in used:
            return SigningKey(kid, secrets.token_bytes(32), now_ms)


class SigningKeys:
    """The node's token-signing key ring: the current key signs, every key verifies the tokens naming it.

    One object per node, shared by whoever signs or verifies; a rotation replaces its
    contents in place (`replace`), so every holder sees the new ring at once. `version` is
    the stored ring's (KeyRing.version) this copy was made from; 0 when it was not stored.
    """

    def __init__(self, keys: Sequence[SigningKey], current: str, version: int = 0) -> None:
        self._keys: dict[str, SigningKey] = {}
        self._current = ""
        self.version = 0
        self.replace(keys, current, version)

    @classmethod
    def generate(cls, now_ms: int = 0) -> SigningKeys:
        """A ring of one fresh key."""
        key = new_signing_key(now_ms)
        return cls([key], key.kid)

    def replace(self, keys: Sequence[SigningKey], current: str, version: int = 0) -> None:
        by_kid = {k.kid: k for k in keys}
        if current not in by_kid or len(by_kid) != len(keys) or not all(_KID.fullmatch(k) for k in by_kid):
            raise ValueError("a signing key ring needs distinct kids (1-32 of a-z 0-9), the current one among them")
        self._keys, self._current, self.version = by_kid, current, version

    @property
    def current(self) -> SigningKey:
        return self._keys[self._current]

    def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def keys(self) -> list[SigningKey]:
        """Every key, oldest first."""
        return sorted(self._keys.values(), key=lambda k: (k.created_ms, k.kid))


def rotated(keys: Sequence[SigningKey], now_ms: int, retire_previous: bool) -> tuple[list[SigningKey], SigningKey]:
    """The ring after a rotation: a new current key, after the older keys (none if `retire_previous`)."""
    new = new_signing_key(now_ms, (k.kid for k in keys))
    return [*(() if retire_previous else keys), new], new


class CurrentKeyError(ValueError):
    """The current signing key cannot be retired: rotate first."""


def retired(keys: Sequence[SigningKey], current: str, kid: str) -> list[SigningKey] | None:
    """The ring without the key `kid` (None if it has no such key); CurrentKeyError for the current key."""
    if kid == current:
        raise CurrentKeyError(f"{kid} is the current signing key: rotate first, then retire it")
    kept = [k for k in keys if k.kid != kid]
    return None if len(kept) == len(keys) else kept


def token_kid(token: str) -> str | None:
    """The kid a token names (`legacy` for one from before key ids), or None if it names none that could be valid."""
    parts = token.split(".")
    if len(parts) == 3 and _KID.fullmatch(parts[0]):
        return parts[0]
    return LEGACY_KID if len(parts) == 2 else None


def sign_claims(keys: SigningKeys, claims: dict[str, object], purpose: bytes = b"") -> str:
    """`kid "." base64url(json claims) "." base64url(hmac)` under the current key: the one token format Herald signs."""
    key = keys.current
    signed = f"{key.kid}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{signed}.{_b64(hmac.new(_derive(key.secret, purpose), signed.encode(), hashlib.sha256).digest())}"


def verify_claims(keys: SigningKeys, token: str, purpose: bytes = b"") -> dict[str, object]:
    """The claims of a token signed by a key of the ring (for `purpose`); InvalidToken otherwise."""
    parts = token.split(".")
    if len(parts) == 3:
        kid, body, signature = parts
        if not _KID.fullmatch(kid):
            raise InvalidToken("malformed kid")
        signed = f"{kid}.{body}"
    elif len(parts) == 2:  # from before key ids
        kid, (body, signature) = LEGACY_KID, parts
        signed = body
    else:
        raise InvalidToken("malformed token")
    key = keys.get(kid)
    if key is None:
        raise InvalidToken(f"unknown kid {kid!r}")
    given, body_bytes = _unb64(signature), _unb64(body)
    expected = hmac.new(_derive(key.secret, purpose), signed.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise InvalidToken("bad signature")
    try:
        claims = json.loads(body_bytes)
    except ValueError:
        raise InvalidToken("malformed claims") from None
    if not isinstance(claims, dict):
        raise InvalidToken("malformed claims")
    return claims


@dataclass(frozen=True, slots=True)
class SubscriberToken:
    """What a valid subscriber token grants."""

    user_id: str
    expires_ms: int
    can_write: bool  # minted by a key with `send`: may mark read, archive, read_all


def issue_token(keys: SigningKeys, user_id: str, expires_ms: int, *, can_write: bool = False) -> str:
    """A subscriber token for `user_id`, valid until `expires_ms` (wall clock); `can_write` if the minting key may send."""
    claims: dict[str, object] = {"u": user_id, "exp": expires_ms}
    if can_write:
        claims["w"] = True
    return sign_claims(keys, claims)


def read_token(keys: SigningKeys, token: str, now_ms: int) -> SubscriberToken:
    """What the subscriber token grants at `now_ms`; InvalidToken if malformed, tampered with or expired."""
    claims = verify_claims(keys, token)
    user_id, expires, write = claims.get("u"), claims.get("exp"), claims.get("w", False)
    if not isinstance(user_id, str) or type(expires) is not int or type(write) is not bool:
        raise InvalidToken("malformed claims")
    if expires <= now_ms:
        raise InvalidToken("token expired")
    return SubscriberToken(user_id, expires, write)


def verify_token(keys: SigningKeys, token: str, now_ms: int) -> str:
    """The user id of a valid subscriber token; InvalidToken if malformed, tampered with or expired."""
    return read_token(keys, token, now_ms).user_id
