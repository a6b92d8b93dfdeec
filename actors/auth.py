"""API keys and subscriber tokens.

An API key is `hk_<key_id>_<secret>`: a 12-hex-digit id, stored in clear, and a 256-bit
secret of which only `sha256(key_id ":" secret)` is stored (a high-entropy secret needs
neither a salt nor a slow hash). Each key lists its scopes (protocol.keys.Scope; none
implies another), a name, its rate limit (or the node's default) and, once revoked, when.
`ApiKeys` checks a presented key against a small in-memory cache of the store: a revoke
on this node replaces the cached entry at once; a change made elsewhere (the offline
CLI, another node) is seen when the entry expires (`key_cache_ttl_s`).

The bootstrap key is the node's configured (`api_key`, HERALD_API_KEY) or generated key:
any string, compared in constant time, with every scope and no rate limit. It keeps
`make run`, the README tour and the CLI working with no set-up.

A subscriber token is `base64url(json {"u": user_id, "exp": ms}) "." base64url(hmac_sha256)`,
signed with the node's secret; it lets a browser or app open a WebSocket for one user
until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from protocol.keys import BOOTSTRAP_KEY_ID, KEY_PREFIX, Scope
from reactor.clock import wall_ms
from reactor.ports import KeyStore, State, StoredKey

KEYS_FILE = "keys.sqlite3"  # the embedded KeyStore, in the data dir
ALL_SCOPES = frozenset(s.value for s in Scope)
_KEY_RE = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{12}})_([0-9a-f]{{64}})$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InvalidToken(Exception):
    pass


def sign_claims(key: bytes, claims: dict[str, object]) -> str:
    """`base64url(json claims) "." base64url(hmac_sha256(key, that))`: the one token format Herald signs."""
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def verify_claims(key: bytes, token: str) -> dict[str, object]:
    """The claims of a token signed with `key`; InvalidToken if malformed or tampered with."""
    try:
        body, signature = token.split(".")
        expected = hmac.new(key, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise InvalidToken("bad signature")
        claims = json.loads(_unb64(body))
    except InvalidToken:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(claims, dict):
        raise InvalidToken("malformed token")
    return claims


def issue_token(secret: bytes, user_id: str, expires_ms: int) -> str:
    """A subscriber token for `user_id`, valid until `expires_ms` (wall clock)."""
    return sign_claims(secret, {"u": user_id, "exp": expires_ms})


def verify_token(secret: bytes, token: str, now_ms: int) -> str:
    """The user id the token was issued for; InvalidToken if tampered with or expired."""
    claims = verify_claims(secret, token)
    user_id, expires = claims.get("u"), claims.get("exp")
    if not isinstance(user_id, str) or not isinstance(expires, int):
        raise InvalidToken("malformed token")
    if expires <= now_ms:
        raise InvalidToken("token expired")
    return user_id


# -- API keys: pure parts


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

    @property
    def bootstrap(self) -> bool:
        """Whether this is the node's configured or generated key."""
        return self.key_id == BOOTSTRAP_KEY_ID


def retry_after(wait_s: float) -> str:
    """A Retry-After value: the wait in whole seconds, rounded up, at least 1."""
    whole = int(wait_s)
    return str(max(1, whole if whole == wait_s else whole + 1))


# -- API keys: the node's view of the store


class ApiKeys:
    """Authenticates API keys (cached), rate limits them, creates and revokes them."""

    def __init__(
        self,
        store: KeyStore,
        state: State,
        bootstrap: str,
        *,
        rate_per_s: float = 1000.0,
        burst: float = 2000.0,
        cache_ttl_s: float = 2.0,
        cache_size: int = 10_000,
        touch_every_s: float = 60.0,
    ) -> None:
        if not (0 < rate_per_s <= 1_000_000 and 0 < burst <= 1_000_000 and cache_ttl_s >= 0 and cache_size >= 1):
            raise ValueError("key_rate_per_s and key_burst must be above 0 (at most 1000000), key_cache_ttl_s at least 0")
        self.store = store
        self.state = state
        self.bootstrap_key = bootstrap
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self.touch_every_s = touch_every_s
        self._cache: dict[str, tuple[StoredKey | None, float]] = {}
        self._generation = 0
        self._touched: dict[str, float] = {}
        self.lookups = 0  # store reads, for tests and metrics
        self.throttled = 0

    def limits_of(self, key: StoredKey) -> tuple[float, float]:
        """The (rate per second, burst) that applies to a stored key."""
        return (key.rate_per_s or self.rate_per_s, key.burst or self.burst)

    async def authenticate(self, header: str | None) -> Caller | None:
        """The caller an Authorization header proves, or None."""
        credential = bearer(header)
        if credential is None:
            return None
        if self.bootstrap_key and hmac.compare_digest(self.bootstrap_key.encode(), credential.encode()):
            return Caller(BOOTSTRAP_KEY_ID, ALL_SCOPES, None, None)
        parsed = parse_api_key(credential)
        if parsed is None:
            return None
        key_id, secret = parsed
        key = await self._lookup(key_id)
        if key is None or key.revoked_ms is not None or not hmac.compare_digest(key.digest, key_digest(key_id, secret)):
            return None
        await self._touch(key_id)
        rate, burst = self.limits_of(key)
        return Caller(key_id, frozenset(key.scopes), rate, burst)

    async def throttle(self, caller: Caller) -> float:
        """Take a token from the caller's bucket: 0.0 if admitted, else the seconds to wait."""
        if caller.rate_per_s is None or caller.burst is None:
            return 0.0
        wait = await self.state.take_tokens(f"ratelimit:apikey:{caller.key_id}", 1, caller.burst, caller.rate_per_s)
        if wait > 0:
            self.throttled += 1
        return wait

    async def create(
        self, scopes: Sequence[str], name: str = "", rate_per_s: float | None = None, burst: float | None = None
    ) -> tuple[StoredKey, str]:
        """Create a key; returns it as stored and the full key, which is never available again."""
        return await create_key(self.store, scopes, name, wall_ms(), rate_per_s, burst)

    async def revoke(self, key_id: str) -> StoredKey | None:
        """Revoke a key; from the return on, this node refuses it. None if there is no such key."""
        key = await self.store.revoke_key(key_id, wall_ms())
        self._generation += 1  # a lookup that read the key before the revoke must not cache it
        self._remember(key_id, key)
        return key

    async def list_keys(self) -> list[StoredKey]:
        """Every stored key (not the bootstrap key), oldest first."""
        return await self.store.list_keys()

    async def _lookup(self, key_id: str) -> StoredKey | None:
        cached = self._cache.get(key_id)
        if cached is not None and trio.current_time() - cached[1] < self.cache_ttl_s:
            return cached[0]
        generation = self._generation
        self.lookups += 1
        key = await self.store.get_key(key_id)
        if generation == self._generation:
            self._remember(key_id, key)
        return key

    def _remember(self, key_id: str, key: StoredKey | None) -> None:
        self._cache.pop(key_id, None)
        while len(self._cache) >= self.cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[key_id] = (key, trio.current_time())

    async def _touch(self, key_id: str) -> None:
        now = trio.current_time()
        last = self._touched.get(key_id)
        if last is None or now - last >= self.touch_every_s:
            self._touched[key_id] = now
            await self.store.touch_key(key_id, wall_ms())


async def create_key(
    store: KeyStore, scopes: Sequence[str], name: str, now_ms: int, rate_per_s: float | None = None, burst: float | None = None
) -> tuple[StoredKey, str]:
    """The one way keys are made (admin API and offline CLI): store a new key, return it and its full text."""
    unknown = set(scopes) - ALL_SCOPES
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {sorted(ALL_SCOPES)}, got {list(scopes)}")
    if len(name) > 100:
        raise ValueError("name: at most 100 characters")
    for label, value in (("rate_per_s", rate_per_s), ("burst", burst)):
        if value is not None and not 0 < value <= 1_000_000:
            raise ValueError(f"{label}: above 0 and at most 1000000")
    ordered = tuple(s.value for s in Scope if s.value in set(scopes))
    while True:
        key_id, full = new_api_key()
        parsed = parse_api_key(full)
        assert parsed is not None
        stored = StoredKey(key_id, key_digest(*parsed), ordered, name, now_ms, rate_per_s=rate_per_s, burst=burst)
        if await store.add_key(stored):
            return stored, full
