"""API keys and token-signing keys, for operators (scope admin): create, list, revoke API keys;
rotate the signing key (`herald keys`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
import trio
from quart import Blueprint, Response

from protocol.keys import (
    BOOTSTRAP_KEY_ID,
    CreatedKey,
    KeyList,
    KeyRequest,
    KeyView,
    Scope,
    SigningKeyList,
    SigningKeyView,
)
from protocol.problems import FieldError, Problem
from reactor.backends import local_state, open_backends
from reactor.clock import iso, wall_ms
from reactor.files import private_dir, private_umask
from reactor.ports import SigningKeyStore, StoredKey

from ..domain.tokens import CurrentKeyError, SigningKeys
from ..services.credentials import ApiKeys, retire_signing_key, rotate_signing_keys
from .errors import ProblemError, authorize, decode_body, json_response, read_body

if TYPE_CHECKING:  # gateway.py imports this module
    from ..config import Config
    from .gateway import Gateway

_request_decoder = msgspec.json.Decoder(KeyRequest)


def key_view(keys: ApiKeys, key: StoredKey) -> KeyView:
    """How a stored key is shown: everything but its digest (a generated bootstrap key: no rate limit)."""
    rate, burst = (None, None) if key.bootstrap else keys.limits_of(key)
    return KeyView(
        key_id=key.key_id,
        name=key.name,
        scopes=[Scope(s) for s in key.scopes],
        created_at=iso(key.created_ms),
        last_used_at=None if key.last_used_ms is None else iso(key.last_used_ms),
        revoked_at=None if key.revoked_ms is None else iso(key.revoked_ms),
        rate_per_s=rate,
        burst=burst,
        bootstrap=key.bootstrap,
    )


def key_list(keys: ApiKeys, stored: list[StoredKey]) -> KeyList:
    """Every key: a configured bootstrap key first (it is not stored), then the stored ones, oldest first."""
    configured = [bootstrap_view()] if keys.bootstrap_key else []
    return KeyList([*configured, *(key_view(keys, k) for k in stored)])


def bootstrap_view() -> KeyView:
    """The configured bootstrap key, listed so that operators know it exists."""
    name = "bootstrap: configured (api_key, HERALD_API_KEY)"
    return KeyView(BOOTSTRAP_KEY_ID, name, list(Scope), None, None, None, None, None, bootstrap=True)


def signing_key_list(ring: SigningKeys) -> SigningKeyList:
    """The signing keys by kid and age, the current one marked: never a secret."""
    current = ring.current.kid
    return SigningKeyList([SigningKeyView(k.kid, iso(k.created_ms), k.kid == current) for k in ring.keys()])


def blueprint(gw: Gateway) -> Blueprint:
    bp = Blueprint("keys", __name__)

    @bp.post("/v1/admin/keys")
    async def post_key() -> Response:
        await authorize(gw, "admin")
        wanted: KeyRequest = decode_body(_request_decoder, await read_body(gw))
        if len(set(wanted.scopes)) != len(wanted.scopes):
            message = "each scope at most once"
            raise ProblemError(Problem("Invalid request", 400, f"scopes: {message}", errors=[FieldError("scopes", message)]))
        key, full = await gw.keys.create([s.value for s in wanted.scopes], wanted.name, wanted.rate_per_s, wanted.burst)
        rate, burst = gw.keys.limits_of(key)
        created = CreatedKey(full, key.key_id, key.name, [Scope(s) for s in key.scopes], iso(key.created_ms), rate, burst)
        return json_response(created, 201, {"Cache-Control": "no-store"})

    @bp.get("/v1/admin/keys")
    async def get_keys() -> Response:
        await authorize(gw, "admin")
        return json_response(key_list(gw.keys, await gw.keys.list_keys()))

    @bp.delete("/v1/admin/keys/<key_id>")
    async def delete_key(key_id: str) -> Response:
        await authorize(gw, "admin")
        if key_id == BOOTSTRAP_KEY_ID:
            message = "the configured bootstrap key comes from configuration (api_key, HERALD_API_KEY): remove it there"
            raise ProblemError(Problem("Conflict", 409, message, errors=[FieldError("key_id", message)]))
        key = await gw.keys.revoke(key_id)
        if key is None:
            raise ProblemError(Problem("Not Found", 404, f"no API key {key_id}", errors=[FieldError("key_id", "no such key")]))
        return json_response(key_view(gw.keys, key))

    changing = trio.Lock()  # one change of the stored signing key ring at a time

    def key_rings() -> SigningKeyStore:
        if gw.signing_key_store is None:
            raise ProblemError(Problem("Conflict", 409, "this node keeps its signing keys nowhere it can change them"))
        rings: SigningKeyStore = gw.signing_key_store
        return rings

    @bp.get("/v1/admin/signing-keys")
    async def get_signing_keys() -> Response:
        await authorize(gw, "admin")
        return json_response(signing_key_list(gw.secret))

    @bp.post("/v1/admin/signing-keys")
    async def rotate_signing_key() -> Response:
        await authorize(gw, "admin")
        rings = key_rings()
        async with changing:
            ring = await rotate_signing_keys(rings, wall_ms(), False, gw.secret)
        return json_response(signing_key_list(ring), 201)

    @bp.delete("/v1/admin/signing-keys/<kid>")
    async def retire_key(kid: str) -> Response:
        await authorize(gw, "admin")
        rings = key_rings()
        try:
            async with changing:
                found = await retire_signing_key(rings, kid, gw.secret)
        except CurrentKeyError as exc:
            raise ProblemError(Problem("Conflict", 409, str(exc), errors=[FieldError("kid", str(exc))])) from None
        if not found:
            raise ProblemError(Problem("Not Found", 404, f"no signing key {kid}", errors=[FieldError("kid", "no such key")]))
        return json_response(signing_key_list(gw.secret))

    return bp


async def offline(config: Config, action: str, *, scopes: Sequence[str] = (), name: str = "",
                  rate_per_s: float | None = None, burst: float | None = None, key_id: str = "",
                  retire_previous: bool = False) -> tuple[bool, object]:
    """`herald keys --offline`: the admin routes' work on the configured key store and signing key ring,
    opened without a node (beside a running one: these two ports allow it); (ok, what to print)."""
    private_umask()
    await trio.to_thread.run_sync(private_dir, config.data_dir)
    ports = ("signing_keys",) if action == "rotate-secret" else ("keys",)
    async with open_backends(config.backend_settings(), ports) as backends:
        if action == "rotate-secret":
            ring = await rotate_signing_keys(backends.signing_keys, wall_ms(), retire_previous)
            return True, signing_key_list(ring)
        keys = ApiKeys(backends.keys, local_state(), config.api_key, rate_per_s=config.key_rate_per_s, burst=config.key_burst)
        if action == "create":
            key, full = await keys.create(scopes, name, rate_per_s, burst)
            rate, limit = keys.limits_of(key)
            return True, CreatedKey(full, key.key_id, key.name, [Scope(s) for s in key.scopes], iso(key.created_ms), rate, limit)
        if action == "list":
            return True, key_list(keys, await keys.list_keys())
        revoked = await keys.revoke(key_id)
        if revoked is None:
            return False, Problem("Not Found", 404, f"no API key {key_id}", errors=[FieldError("key_id", "no such key")])
        return True, key_view(keys, revoked)
