"""How Herald reads what people type: numbers in query strings and settings, and free text.

One grammar everywhere, so that `?limit=`, `?timeout=`, `HERALD_PORT` and a config file
accept and refuse the same spellings:

- an integer is ASCII digits only: no sign, space, underscore, exponent, or digits of
  other scripts (`３`, `٣`, `²` are not numbers here, though `int()` takes some of them);
- a decimal is an integer with an optional `.fraction` (`0.5`, `30`), nothing else
  (no `1e1`, `.5`, `5.`, `inf`, `nan`).

Free text that is not content (names, device tokens) carries no control characters:
C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F), and the line and paragraph separators
U+2028 and U+2029. Multi-line text (a description) may hold tabs and line feeds.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

_INTEGER = re.compile(r"[0-9]{1,30}")
_DECIMAL = re.compile(r"[0-9]{1,30}(\.[0-9]{1,30})?")


def parse_integer(text: str) -> int | None:
    """The integer `text` spells in ASCII digits (at most 30 of them), or None."""
    return int(text) if _INTEGER.fullmatch(text) else None


def parse_decimal(text: str) -> float | None:
    """The number `text` spells as ASCII digits with an optional `.fraction`, or None."""
    return float(text) if _DECIMAL.fullmatch(text) else None


# JSON Schema (ECMA 262) and Python read these patterns the same way; `(?!\n)$` because
# Python's `$` also matches before a final line feed.
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*(?!\n)$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]*$"
DEVICE_TOKEN_PATTERN = r"^[^/\s\x00-\x1f\x7f-\x9f\u2028\u2029]+(?!\n)$"
NO_CONTROLS = "no control characters (U+0000-U+001F, U+007F-U+009F, U+2028, U+2029)"

# One line of free text (a name), and free text over several lines (a description).
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Text = Annotated[str, msgspec.Meta(pattern=TEXT_PATTERN)]
DeviceToken = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=DEVICE_TOKEN_PATTERN)]

# What a pattern means, for the problems that refuse a value (a sentence, not a regex).
PATTERN_SENTENCES: dict[str, str] = {
    NAME_PATTERN: f"text with {NO_CONTROLS}",
    TEXT_PATTERN: f"text with {NO_CONTROLS} but tab and line feed",
    DEVICE_TOKEN_PATTERN: f"a device token: no `/`, no white space, {NO_CONTROLS}",
}


def has_controls(text: str) -> bool:
    """Whether `text` holds a character that NAME_PATTERN refuses."""
    return re.search(NAME_PATTERN, text) is None
