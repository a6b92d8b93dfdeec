"""The node's credentials: API keys against the KeyStore, the bootstrap key, the signing key ring.

`ApiKeys` checks a presented key (actors/domain/api_keys.py: the format and the digest)
against a small in-memory cache of the KeyStore: a revoke on this node replaces the
cached entry at once; a change made elsewhere (the offline CLI, another node) is seen
when the entry expires (`key_cache_ttl_s`).

The bootstrap key has every scope and no rate limit; it keeps `make run`, the README tour
and the CLI working with no set-up. Either it is configured (`api_key`, HERALD_API_KEY):
any string, compared in constant time; or the node generates a real `hk_` key at first
start, stored hashed like any other (flagged `bootstrap`), whose full text exists only in
`<data_dir>/api-key` (0600). Delete that file and restart to get a new one (the old one
is revoked).

The token-signing key ring (actors/domain/tokens.py) is read, made at first start and
rotated here, through the SigningKeyStore port, by compare-and-set on the ring's version
(two nodes rotating at once both keep their key); `SharedSigningKeys` keeps a node's copy
in step with the stored ring (a change made elsewhere is seen within a bounded time).
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from protocol.keys import BOOTSTRAP_KEY_ID, LEGACY_KID, Scope, SigningKey
from reactor.clock import wall_ms
from reactor.files import write_atomically
from reactor.ports import KeyRing, KeyStore, SigningKeyStore, State, Store, StoredKey

from ..domain.api_keys import ALL_SCOPES, Caller, bearer, key_digest, new_api_key, parse_api_key
from ..domain.tokens import SigningKeys, retired, rotated, token_kid

log = logging.getLogger("herald.credentials")

API_KEY_FILE = "api-key"  # the bootstrap key's text, in the data dir (0600)
BOOTSTRAP_NAME = "bootstrap: generated at first start, its text in <data-dir>/api-key"
# the Store's metadata rows of a data dir from before: the signing secret and the generated key, in clear
LEGACY_SECRET_META = "token_secret"
LEGACY_API_KEY_META = "api_key"

# -- signing keys and the bootstrap key: in the stores

REFRESH_S = 30.0  # where the Store is shared: a change of the ring made on another node is seen within this
REREAD_MIN_S = 1.0  # a token naming a kid the ring does not have reads the stored ring again at most this often
CHANGE_TRIES = 20  # compare-and-set attempts of one change while other nodes keep changing the ring


async def change_ring(
    rings: SigningKeyStore, change: Callable[[KeyRing | None], tuple[Sequence[SigningKey], str] | None],
) -> KeyRing | None:
    """Apply `change` (the stored ring, or None -> the new keys and current kid, or None for no change) by
    compare-and-set on the ring's version, reading again and redoing it while another writer gets in first.
    Returns the ring as now stored."""
    for _ in range(CHANGE_TRIES):
        found = await rings.read_ring()
        wanted = change(found)
        if wanted is None:
            return found
        written = await rings.write_ring(wanted[0], wanted[1], None if found is None else found.version)
        if written is not None:
            return written
    raise RuntimeError(f"the signing key ring changed under this change {CHANGE_TRIES} times in a row: try again")


async def open_signing_keys(rings: SigningKeyStore, store: Store, now_ms: int) -> SigningKeys:
    """The stored ring, made at first start. A secret the Store kept in clear (a data dir from
    before key ids) moves into the ring as the key `legacy`, which keeps verifying the tokens it
    signed; a fresh key signs from now on, and the Store forgets the old secret."""
    legacy = await store.get_meta(LEGACY_SECRET_META)

    def first_ring(found: KeyRing | None) -> tuple[list[SigningKey], str] | None:
        if found is not None:
            return None  # there is one (another node may have made it meanwhile)
        keys = [] if legacy is None else [SigningKey(LEGACY_KID, legacy.encode(), 0)]
        made, current = rotated(keys, now_ms, retire_previous=False)
        return made, current.kid

    stored = await change_ring(rings, first_ring)
    assert stored is not None
    if legacy is not None:
        await store.forget_meta(LEGACY_SECRET_META)  # only once the ring holds it durably
    return SigningKeys(stored.keys, stored.current, stored.version)


async def rotate_signing_keys(rings: SigningKeyStore, now_ms: int, retire_previous: bool, ring: SigningKeys | None = None) -> SigningKeys:
    """Add a new current key to the stored ring (made if absent), and to `ring` (the running node's)
    if given; with `retire_previous`, drop every older key (their tokens stop working). A rotation
    made at the same time on another node is kept: both new keys are in the ring."""

    def rotate(found: KeyRing | None) -> tuple[list[SigningKey], str]:
        keys = list(found.keys) if found is not None else (ring.keys() if ring is not None else [])
        new_ring, new_current = rotated(keys, now_ms, retire_previous)
        return new_ring, new_current.kid

    stored = await change_ring(rings, rotate)
    assert stored is not None
    if ring is None:
        return SigningKeys(stored.keys, stored.current, stored.version)
    ring.replace(stored.keys, stored.current, stored.version)
    return ring


async def retire_signing_key(rings: SigningKeyStore, kid: str, ring: SigningKeys) -> bool:
    """Drop the key `kid` from the stored ring and from `ring`: every token it signed stops verifying.

    False if there is no such key; CurrentKeyError for the current one."""
    missing = False

    def retire(found: KeyRing | None) -> tuple[list[SigningKey], str] | None:
        nonlocal missing
        keys, current = (list(found.keys), found.current) if found is not None else (ring.keys(), ring.current.kid)
        kept = retired(keys, current, kid)
        missing = kept is None
        return None if kept is None else (kept, current)

    stored = await change_ring(rings, retire)
    if missing:
        return False
    assert stored is not None
    ring.replace(stored.keys, stored.current, stored.version)
    return True


class SharedSigningKeys:
    """This node's copy of the stored signing key ring (`ring`: what signs and verifies), kept in step
    with the SigningKeyStore that every node of the Store shares.

    A change made elsewhere (a rotation or a retirement on another node, or by the offline CLI) is
    seen: at once by a token that names a kid this copy lacks (`learn`: the stored ring is read
    again, at most once per `reread_min_s`, whatever the tokens); and within `refresh_s` in any case
    where the Store is shared (`keep_fresh`, a child of a stage). With the embedded Store the node is
    the ring's only writer while it runs (the offline CLI wants it stopped), so `refresh_s` is None.
    """

    def __init__(
        self, store: SigningKeyStore, ring: SigningKeys, *,
        refresh_s: float | None = REFRESH_S, reread_min_s: float = REREAD_MIN_S,
    ) -> None:
        self.store = store
        self.ring = ring
        self.refresh_s = refresh_s
        self.reread_min_s = reread_min_s
        self._last_reread = -math.inf
        self._reading: trio.Event | None = None
        self._stop = trio.Event()
        self.reads = 0

    async def refresh(self) -> bool:
        """Read the stored ring and adopt it if it is newer than this copy; True if it was. Concurrent
        callers share one read."""
        if self._reading is not None:
            version = self.ring.version
            await self._reading.wait()
            return self.ring.version != version
        self._reading = reading = trio.Event()
        try:
            self.reads += 1
            found = await self.store.read_ring()
            if found is None or found.version <= self.ring.version:
                return False
            self.ring.replace(found.keys, found.current, found.version)
            return True
        finally:
            self._reading = None
            reading.set()

    async def learn(self, token: str) -> None:
        """Call before verifying `token`: if it names a kid this copy lacks, read the stored ring again
        (or wait for the read under way), at most once per `reread_min_s`."""
        kid = token_kid(token)
        if kid is None or self.ring.get(kid) is not None:
            return
        if self._reading is not None:
            await self._reading.wait()
            return
        now = trio.current_time()
        if now - self._last_reread < self.reread_min_s:
            return  # a client cannot make the node read the store more often with made-up kids
        self._last_reread = now
        try:
            await self.refresh()
        except Exception as exc:  # the store is unreachable: the token is refused as unknown, the node carries on
            log.warning("signing keys: could not read the stored ring for an unknown kid: %r", exc)

    async def keep_fresh(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the stored ring every `refresh_s` until stopped (with refresh_s None: only wait to be stopped)."""
        task_status.started()
        while not self._stop.is_set():
            with trio.move_on_after(math.inf if self.refresh_s is None else self.refresh_s):
                await self._stop.wait()
            if not self._stop.is_set():
                try:
                    await self.refresh()
                except Exception as exc:  # tried again at the next period; a store outage must not stop the node
                    log.warning("signing keys: could not refresh the ring from the store: %r", exc)

    def stop(self) -> None:
        self._stop.set()


async def learn_kid(keys: SharedSigningKeys | None, token: str) -> None:
    """Before verifying a token: let the node's ring learn a key made elsewhere (nothing when `keys` is None)."""
    if keys is not None:
        await keys.learn(token)


async def open_bootstrap_key(store: KeyStore, key_file: Path, configured: str, now_ms: int, *, shared: bool = False) -> str:
    """The node's bootstrap key, written to `key_file` (0600) for the CLI and the README tour.

    A configured key (`api_key`, HERALD_API_KEY) is used as it is, and replaces a generated
    one (revoked). Otherwise the generated `hk_` key whose text `key_file` holds is kept (revoked
    or not: a revoke stands); if the file is missing or holds no such key, a new one is made and
    any previous generated key revoked.

    `shared`: the KeyStore is shared with other nodes (a cluster, each node with its own data dir). A
    live generated key there was made by the node that holds its text: it is the cluster's, kept (each
    node checks it through the KeyStore), and this node returns "" (no text of its own, no file).
    """

    def read() -> str:
        try:
            return key_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def write(text: str) -> None:
        write_atomically(key_file, text.encode() + b"\n")

    text = await trio.to_thread.run_sync(read)
    if not configured:
        parsed = parse_api_key(text)
        if parsed is not None:
            stored = await store.get_key(parsed[0])
            if stored is not None and stored.bootstrap and hmac.compare_digest(stored.digest, key_digest(*parsed)):
                return text
    if shared and not configured and any(key.bootstrap and key.revoked_ms is None for key in await store.list_keys()):
        return ""  # another node's generated key: revoking it would lock out every node that uses it
    for key in await store.list_keys():
        if key.bootstrap and key.revoked_ms is None:
            await store.revoke_key(key.key_id, now_ms)
    if configured:
        if text != configured:
            await trio.to_thread.run_sync(write, configured)
        return configured
    _, full = await create_key(store, sorted(ALL_SCOPES), BOOTSTRAP_NAME, now_ms, bootstrap=True)
    await trio.to_thread.run_sync(write, full)
    return full


async def open_node_credentials(
    rings: SigningKeyStore, store: Store, keystore: KeyStore, key_file: Path, configured_key: str, *, shared: bool = False,
) -> tuple[SigningKeys, str]:
    """The node's signing key ring and bootstrap key (its text in `key_file`), at start-up; the Store keeps neither in clear.
    `shared`: other nodes share the stores (open_bootstrap_key)."""
    now = wall_ms()
    ring = await open_signing_keys(rings, store, now)
    await store.forget_meta(LEGACY_API_KEY_META)  # a generated key from before: replaced by a hashed hk_ key
    return ring, await open_bootstrap_key(keystore, key_file, configured_key, now, shared=shared)


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
        """The (rate per second, burst) that applies to a stored key (the bootstrap key has none: see Caller)."""
        return (key.rate_per_s or self.rate_per_s, key.burst or self.burst)

    async def authenticate(self, header: str | None) -> Caller | None:
        """The caller an Authorization header proves, or None."""
        credential = bearer(header)
        if credential is None:
            return None
        if self.bootstrap_key and hmac.compare_digest(self.bootstrap_key.encode(), credential.encode()):
            return Caller(BOOTSTRAP_KEY_ID, ALL_SCOPES, None, None, bootstrap=True)
        parsed = parse_api_key(credential)
        if parsed is None:
            return None
        key_id, secret = parsed
        key = await self._lookup(key_id)
        if key is None or key.revoked_ms is not None or not hmac.compare_digest(key.digest, key_digest(key_id, secret)):
            return None
        await self._touch(key_id)
        if key.bootstrap:
            return Caller(key_id, ALL_SCOPES, None, None, bootstrap=True)
        rate, burst = self.limits_of(key)
        return Caller(key_id, frozenset(key.scopes), rate, burst)

    async def throttle(self, caller: Caller, tokens: int = 1) -> float:
        """Take `tokens` (at most the burst) from the caller's bucket: 0.0 if admitted, else the seconds to wait."""
        if caller.rate_per_s is None or caller.burst is None:
            return 0.0
        wait = await self.state.take_tokens(f"ratelimit:apikey:{caller.key_id}", tokens, caller.burst, caller.rate_per_s)
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
        """Every stored key (a generated bootstrap key included, not a configured one), oldest first."""
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
    store: KeyStore, scopes: Sequence[str], name: str, now_ms: int, rate_per_s: float | None = None, burst: float | None = None,
    *, bootstrap: bool = False,
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
        stored = StoredKey(
            key_id, key_digest(*parsed), ordered, name, now_ms, rate_per_s=rate_per_s, burst=burst, bootstrap=bootstrap,
        )
        if await store.add_key(stored):
            return stored, full
