"""API keys (scopes, the admin API's schemas under `/v1/admin/keys`) and token-signing keys. Pure data."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from .parsing import NAME_PATTERN

KEY_PREFIX = "hk_"
BOOTSTRAP_KEY_ID = "bootstrap"  # how a configured (api_key, HERALD_API_KEY) bootstrap key is listed
LEGACY_KID = "legacy"  # the signing secret of a data dir from before key ids: verifies tokens that name no kid


class Scope(str, enum.Enum):
    """What a key may do. No scope implies another: a key gets exactly the scopes it lists."""

    SEND = "send"  # POST /v1/notifications
    READ = "read"  # statuses, histories, subscriber tokens (a token reads a user's notifications)
    ADMIN = "admin"  # /v1/admin/*: circuits, dead letters, keys


Rate = Annotated[float, msgspec.Meta(gt=0, le=1_000_000)]


class KeyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # each at most once (the handler refuses a repeat with 400; uniqueItems says so in the OpenAPI description)
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=3, extra_json_schema={"uniqueItems": True})]
    name: Annotated[str, msgspec.Meta(max_length=100, pattern=NAME_PATTERN)] = ""  # one line, no control characters
    rate_per_s: Rate | None = None  # None: the node's default (key_rate_per_s)
    burst: Rate | None = None  # None: the node's default (key_burst)


class KeyView(msgspec.Struct, frozen=True):
    """A key as listed: never its secret."""

    key_id: str
    name: str
    scopes: list[Scope]
    created_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    rate_per_s: float | None  # None: unlimited (the bootstrap key)
    burst: float | None
    bootstrap: bool = False  # the node's bootstrap key: every scope, no rate limit


class CreatedKey(msgspec.Struct, frozen=True):
    """The answer to a create: the only time the full key is shown."""

    key: str
    key_id: str
    name: str
    scopes: list[Scope]
    created_at: str
    rate_per_s: float
    burst: float


class KeyList(msgspec.Struct, frozen=True):
    keys: list[KeyView]


# -- token-signing keys (subscriber and unsubscribe tokens)


class SigningKey(msgspec.Struct, frozen=True):
    """One HMAC key of the node's token-signing key ring: its id (the `kid` a token names) and secret."""

    kid: str
    secret: bytes
    created_ms: int


class SigningKeyView(msgspec.Struct, frozen=True):
    """A signing key as listed: never its secret."""

    kid: str
    created_at: str
    current: bool  # the key new tokens are signed with


class SigningKeyList(msgspec.Struct, frozen=True):
    keys: list[SigningKeyView]
