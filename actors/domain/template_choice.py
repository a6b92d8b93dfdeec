"""Templates, the choice: which locale and which A/B variant of a template a recipient gets.

Locales match case-insensitively and fall back from the most specific (fr-CA, fr, the
template's default); a variant is a stable weighted pick per (template, user); the part
of each channel is merged field by field along that chain. Pure: property-tested.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from protocol.channels import Channel
from protocol.problems import FieldError

if TYPE_CHECKING:
    from .rendering import CompiledPart, CompiledSource, CompiledTemplate


def normalize_locale(tag: str) -> str:
    """`fr_CA` and `FR-ca` -> `fr-ca`: locales match case-insensitively."""
    return tag.replace("_", "-").lower()


def locale_chain(requested: str | None, default: str) -> list[str]:
    """The locales to try, most specific first: fr-CA -> [fr-ca, fr, <default>]."""
    chain: list[str] = []
    if requested:
        subtags = normalize_locale(requested).split("-")
        chain = ["-".join(subtags[:n]) for n in range(len(subtags), 0, -1)]
    default = normalize_locale(default)
    if default not in chain:
        chain.append(default)
    return chain


def pick_variant(template_id: str, user_id: str, weights: Sequence[tuple[str, int]]) -> str:
    """The user's variant: a stable hash of (template, user) -> a weighted pick ("" without variants)."""
    arms = sorted((name, weight) for name, weight in weights if weight > 0)
    total = sum(weight for _, weight in arms)
    if total == 0:
        return ""
    digest = hashlib.sha256(f"{template_id}\x00{user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for name, weight in arms:
        if point < weight:
            return name
        point -= weight
    raise AssertionError("unreachable: point < total")


def template_tag(template_id: str, version: int, variant: str = "") -> str:
    """What the delivery log records: "welcome@3", or "welcome@3#B" for variant B."""
    return f"{template_id}@{version}" + (f"#{variant}" if variant else "")


def resolve_part(template: CompiledTemplate, channel: Channel, chain: Sequence[str], variant: str) -> CompiledPart | None:
    """The part to render, field by field: each field from the first locale of the chain whose part has it. A
    locale's part is the variant's override if it has one (replacing the base part of that locale as a whole),
    else the base part. The most specific part found names the result; None if no locale has the part."""
    overrides = template.variants.get(variant, {})
    found = [
        part
        for locale in chain
        if (part := overrides.get(locale, {}).get(channel) or template.base.get(locale, {}).get(channel)) is not None
    ]
    if not found:
        return None
    fields: dict[str, CompiledSource] = {}
    for part in found:
        for name, source in part.fields:
            fields.setdefault(name, source)
    return replace(found[0], fields=tuple(fields.items()))


def choose_parts(template: CompiledTemplate, channels: Sequence[Channel], locale: str | None, variant: str) -> dict[Channel, CompiledPart] | list[FieldError]:
    """The part each channel renders, or an error per channel the template lacks."""
    chain = locale_chain(locale, template.default_locale)
    parts: dict[Channel, CompiledPart] = {}
    errors: list[FieldError] = []
    for channel in channels:
        part = resolve_part(template, channel, chain, variant)
        if part is None:
            errors.append(FieldError("channels", f"template {template.id} has no {channel.value} part (locales tried: {', '.join(chain)})"))
        else:
            parts[channel] = part
    return errors or parts
