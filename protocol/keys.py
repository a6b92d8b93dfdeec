"""API keys: scopes and the admin API's schemas (`/v1/admin/keys`). Pure data."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from .parsing import NAME_PATTERN

KEY_PREFIX = "hk_"
BOOTSTRAP_KEY_ID = "bootstrap"


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
    bootstrap: bool = False


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
