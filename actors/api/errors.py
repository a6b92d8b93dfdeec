"""What every route shares: problem responses, JSON responses, parameter checks, auth, bodies."""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Response, request

from protocol.problems import PROBLEM_CONTENT_TYPE, FieldError, Problem, invalid
from reactor.clock import parse_iso

from ..auth import Caller, retry_after

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
_REALM = 'Bearer realm="herald"'


async def authorize(gw: Any, scope: str) -> Caller:
    """The caller, if its API key is valid, within its rate limit and grants `scope` (one of SCOPES).

    401 (with WWW-Authenticate) without a valid key, 429 (with Retry-After) over the
    key's rate limit, 403 naming the scope with a key that lacks it.
    """
    assert scope in SCOPES, scope
    header = request.headers.get("Authorization")
    caller: Caller | None = await gw.keys.authenticate(header)
    if caller is None:
        if header is None:
            detail, challenge = "an API key is required: Authorization: Bearer <key>", _REALM
        else:
            detail, challenge = "the API key is not valid (unknown, malformed or revoked)", f'{_REALM}, error="invalid_token"'
        raise ProblemError(
            Problem("Unauthorized", 401, detail, errors=[FieldError("Authorization", detail)]),
            {"WWW-Authenticate": challenge},
        )
    wait = await gw.keys.throttle(caller)
    if wait > 0:
        detail = f"API key {caller.key_id} is over its rate limit ({caller.rate_per_s:g}/s, burst {caller.burst:g})"
        raise ProblemError(
            Problem("Too Many Requests", 429, detail, errors=[FieldError("Authorization", detail)]),
            {"Retry-After": retry_after(wait)},
        )
    if scope not in caller.scopes:
        detail = f"API key {caller.key_id} lacks the scope `{scope}`"
        raise ProblemError(
            Problem("Forbidden", 403, detail, errors=[FieldError("Authorization", f"the scope `{scope}` is required")]),
            {"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{scope}"'},
        )
    return caller


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


