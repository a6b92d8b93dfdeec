"""What every route shares: problem responses, JSON responses, parameter checks, auth, bodies."""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Response, request

from protocol.problems import PROBLEM_CONTENT_TYPE, FieldError, Problem, invalid
from reactor.clock import parse_iso

from ..auth import api_key_matches

_json = msgspec.json.Encoder()


class ProblemError(Exception):
    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.headers = headers or {}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(problem), status=problem.status, content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(value), status=status, content_type="application/json", headers=headers)


def bad_param(name: str, message: str) -> ProblemError:
    return ProblemError(Problem("Invalid request", 400, f"{name}: {message}", errors=[FieldError(name, message)]))


SCOPES = ("send", "read", "admin")


async def authorize(gw: Any, scope: str) -> None:
    """Refuse the request unless its API key grants `scope` (one of SCOPES).

    401 without a valid key, 403 with a key that lacks the scope. Today there is one
    key and it grants every scope.
    """
    assert scope in SCOPES, scope
    if not api_key_matches(gw.api_key, request.headers.get("Authorization")):
        raise ProblemError(
            Problem("Unauthorized", 401, "an API key is required: Authorization: Bearer <key>"),
            {"WWW-Authenticate": 'Bearer realm="herald"'},
        )


async def read_body(gw: Any) -> bytes:
    """The request body, refused with 413 past the configured size."""
    length = request.content_length
    if length is not None and length > gw.max_body_bytes:
        raise ProblemError(Problem("Payload Too Large", 413, f"body over {gw.max_body_bytes} bytes"))
    body: bytes = await request.get_data(cache=False, as_text=False)
    return body


def decode_body(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """Decode with a schema; a problem naming the field if it does not fit."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ProblemError(invalid(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ProblemError(Problem("Malformed JSON", 400, str(exc), errors=[FieldError("body", str(exc))])) from None


def time_param(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value) if value.isdigit() else parse_iso(value)
    except ValueError:
        raise bad_param(name, "an RFC 3339 timestamp or milliseconds since the epoch") from None


def limit_param(value: str | None, default: int = 50) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 200:
        raise bad_param("limit", "an integer from 1 to 200")
    return int(value)


