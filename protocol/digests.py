"""Digests: the API schemas of a send's `digest`, the per-user overrides in preferences, and the pending-digests view.

A send (or a template) names a digest `key` and a `window`; events with the same (user, key)
inside a window are collected and sent as one notification (actors/domain/digests.py has the
rules, actors/digester.py fires them). Three kinds of window:

- `{"kind": "fixed", "every": "1h"}`: the window opens with its first event and fires `every` later;
- `{"kind": "sliding", "after_quiet": "10m", "max_wait": "2h"}`: fires once no new event came for
  `after_quiet`, and at the latest `max_wait` after the first event;
- `{"kind": "daily", "at": "08:00"}`: fires at the next `at` on the user's own clock (their
  preferences' timezone), after their quiet hours if `at` falls inside them.

Durations are `<digits><unit>` with s, m, h or d (`90s`, `10m`, `1h`, `2d`).
actors/domain/digests.check_window checks a window (a 422 naming the field).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .preferences import CATEGORY_PATTERN

DIGEST_KEY_PATTERN = CATEGORY_PATTERN  # a-z0-9 and _.-, at most 64
MAX_OVERRIDES = 50

DigestKey = Annotated[str, msgspec.Meta(pattern=DIGEST_KEY_PATTERN, description="Events of one user with the same key are collected into one digest.")]


WINDOW_KINDS = ("fixed", "sliding", "daily")
Spelling = Annotated[str, msgspec.Meta(max_length=16)]


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A digest window: `kind` fixed (with `every`), sliding (`after_quiet`, `max_wait`) or daily (`at`, HH:MM).

    One struct, checked by actors/domain/digests.check_window (a 422 naming the field: an
    unknown kind, a field the kind does not take or lacks, a duration misspelt or over its limits).
    """

    kind: Annotated[str, msgspec.Meta(max_length=16, description="fixed | sliding | daily")]
    every: Annotated[Spelling, msgspec.Meta(description="fixed: fires this long after the window's first event (1m to 7d)")] | None = None
    after_quiet: Annotated[Spelling, msgspec.Meta(description="sliding: fires once no event came for this long (10s to 1d)")] | None = None
    max_wait: Annotated[Spelling, msgspec.Meta(description="sliding: fires at the latest this long after the first event (after_quiet to 7d)")] | None = None
    at: Annotated[Spelling, msgspec.Meta(description="daily: HH:MM on the user's clock (after their quiet hours if inside them)")] | None = None


class DigestSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A send's (or a template's) digest: its key and window. A user's preferences may choose another window."""

    key: DigestKey
    window: Window


class PendingDigest(msgspec.Struct, frozen=True):
    """GET /v1/users/{id}/digests: one digest collecting events (`firing`: its notification is being made)."""

    key: str
    count: int
    first_at: str
    last_at: str
    fires_at: str
    firing: bool = False


class PendingDigests(msgspec.Struct, frozen=True):
    items: list[PendingDigest]


DigestOverrides = Annotated[dict[DigestKey, Window], msgspec.Meta(max_length=MAX_OVERRIDES, description=(
    "Per digest key or category: the window this user wants instead of the send's (daily instead of hourly, say). "
    "A digest key is looked up first, then the send's category."
))]
