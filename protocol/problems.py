"""Error payloads: RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import re

import msgspec

PROBLEM_CONTENT_TYPE = "application/problem+json"


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    title: str
    status: int
    detail: str = ""
    type: str = "about:blank"
    errors: list[FieldError] = []


_AT_PATH = re.compile(r"\s*-\s*at `\$(?P<path>[^`]*)`\s*$")


def field_of(message: str) -> tuple[str, str]:
    """Split a msgspec validation message into (field path, message).

    "Expected `str`, got `int` - at `$.content.email.subject`" -> ("content.email.subject", "Expected `str`, got `int`")
    """
    match = _AT_PATH.search(message)
    if not match:
        return "", message
    path = match.group("path").lstrip(".")
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    return path, message[: match.start()]


def invalid(message: str, *, status: int = 400, title: str = "Invalid request") -> Problem:
    """A problem naming the field a msgspec message points at."""
    path, text = field_of(message)
    if "Object contains unknown field" in text or "Object missing required field" in text:
        name = re.search(r"`([^`]*)`", text)
        if name:
            path = f"{path}.{name.group(1)}" if path else name.group(1)
    errors = [FieldError(field=path or "body", message=text)]
    detail = f"{path or 'body'}: {text}"
    return Problem(title=title, status=status, detail=detail, errors=errors)
