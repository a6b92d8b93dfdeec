"""Every pattern a request can be refused by has a sentence (protocol/patterns.py), so no problem shows a regex."""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi

from actors.api.openapi import OPERATIONS
from protocol.frames import ClientFrame
from protocol.patterns import PATTERN_SENTENCES, readable
from protocol.preferences import Preferences


def patterns_of(kind: Any) -> set[str]:
    """Every `pattern` constraint of a type, anywhere inside it (dict keys included)."""
    found: set[str] = set()
    seen: set[int] = set()

    def walk(info: mi.Type) -> None:
        if id(info) in seen:
            return
        seen.add(id(info))
        if isinstance(info, mi.StrType) and info.pattern is not None:
            found.add(info.pattern)
        for name in ("fields",):
            for field in getattr(info, name, ()):
                walk(field.type)
        for name in ("item_type", "key_type", "value_type", "type"):  # `type`: a Metadata wrapper (extra JSON schema)
            value = getattr(info, name, None)
            if isinstance(value, mi.Type):
                walk(value)
        for name in ("types", "item_types"):
            for value in getattr(info, name, ()):
                walk(value)

    walk(mi.type_info(kind))
    return found


def request_types() -> list[Any]:
    types = [ClientFrame, Preferences]
    for op in OPERATIONS:
        if op.body is not None:
            types += [t for t in op.body.content.values() if isinstance(t, type) and issubclass(t, msgspec.Struct)]
    return types


def test_every_pattern_of_a_request_has_a_sentence():
    patterns = set().union(*(patterns_of(t) for t in request_types()))
    assert len(patterns) >= 11  # the walk reaches into nested structs, lists and dict keys
    missing = patterns - set(PATTERN_SENTENCES)
    assert not missing, f"patterns without a sentence in protocol/patterns.py: {sorted(missing)}"


def test_readable_replaces_each_pattern():
    for pattern, sentence in PATTERN_SENTENCES.items():
        message = f"Expected `str` matching regex {pattern!r} - at `$.x`"
        assert readable(message) == f"Expected {sentence} - at `$.x`"
