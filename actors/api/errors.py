"""What every route shares: problem responses, JSON responses, parameter checks, auth, bodies."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from quart import Response, request

from protocol.parsing import parse_decimal, parse_integer
from protocol.patterns import readable
from protocol.problems import PROBLEM_CONTENT_TYPE, FieldError, Problem, invalid
from reactor.clock import parse_iso
from reactor.log_limit import RateLimit
from reactor.ports import PortUnavailable

from ..domain.api_keys import Caller

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

_json = msgspec.json.Encoder()
log = logging.getLogger(__name__)
# a backend away: every request answered 503 would log its line; a few per 10 s, then a count (reactor/log_limit.py)
log.addFilter(RateLimit(burst=5, window_s=10.0))
T = TypeVar("T")


class ProblemError(Exception):
    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Answer:
    """A framework-free HTTP answer: what the Quart routes and the ASGI fast path both send."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, _json.encode(value), "application/json", headers or {})


def problem_answer(problem: Problem, headers: dict[str, str] | None = None) -> Answer:
    return Answer(problem.status, _json.encode(problem), PROBLEM_CONTENT_TYPE, headers or {})


def to_response(answer: Answer) -> Response:
    return Response(answer.body, status=answer.status, content_type=answer.content_type, headers=answer.headers)


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return to_response(problem_answer(problem, headers))


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return to_response(json_answer(value, status, headers))


UNAVAILABLE_RETRY_S = 1  # Retry-After of a 503 for a backend that cannot be reached (a Redis down: it recovers by itself)


def unavailable(exc: PortUnavailable) -> Answer:
    """A backend's server cannot be reached (reactor.ports.PortUnavailable): 503, retry shortly; the detail is logged, not sent."""
    log.warning("answering 503: %s", exc)
    return problem_answer(Problem("Service Unavailable", 503, "a backend this request needs is unavailable; retry shortly"),
                          {"Retry-After": str(UNAVAILABLE_RETRY_S)})


def retry_after(wait_s: float) -> str:
    """A Retry-After value: the wait in whole seconds, rounded up, at least 1."""
    whole = int(wait_s)
    return str(max(1, whole if whole == wait_s else whole + 1))


def bad_param(name: str, message: str) -> ProblemError:
    return ProblemError(Problem("Invalid request", 400, f"{name}: {message}", errors=[FieldError(name, message)]))


def served(service: T | None, name: str) -> T:
    """A Gateway field that only some roles have (gateway.py), for a route of an area that needs it.

    Set on every node whose role serves the area: a route of another role's area is not
    registered there (it answers 421), so a route never meets None; if one did, the error names it.
    """
    if service is None:
        raise RuntimeError(f"this node's gateway has no {name}: its role does not serve the route")
    return service


SCOPES = ("send", "read", "admin")
_REALM = 'Bearer realm="herald"'


async def authorize(gw: Gateway, scope: str) -> Caller:
    """The caller of the current Quart request; see check_access."""
    return await check_access(gw, request.headers.get("Authorization"), scope)


async def check_access(gw: Gateway, header: str | None, scope: str) -> Caller:
    """The caller, if its API key is valid, within its rate limit and grants `scope` (one of SCOPES).

    401 (with WWW-Authenticate) without a valid key, 429 (with Retry-After) over the
    key's rate limit, 403 naming the scope with a key that lacks it.
    """
    assert scope in SCOPES, scope
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


async def over_rate_limit(gw: Gateway, caller: Caller, tokens: int, field: str) -> ProblemError | None:
    """Take `tokens` more from the caller's bucket (a request that counts as many, e.g. a batch's items).

    None if taken; else a 429 with Retry-After, or a 422 naming `field` if the key's burst
    could never hold them."""
    if caller.burst is not None and tokens + 1 > caller.burst:
        detail = f"{tokens + 1} {field} are over API key {caller.key_id}'s burst ({caller.burst:g}): send at most {int(caller.burst)} per call"
        return ProblemError(Problem("Unprocessable batch", 422, detail, errors=[FieldError(field, detail)]))
    wait = await gw.keys.throttle(caller, tokens)
    if wait <= 0:
        return None
    detail = f"API key {caller.key_id} is over its rate limit ({caller.rate_per_s:g}/s, burst {caller.burst:g}) for {tokens + 1} {field}"
    return ProblemError(
        Problem("Too Many Requests", 429, detail, errors=[FieldError("Authorization", detail)]), {"Retry-After": retry_after(wait)}
    )


async def read_body(gw: Gateway) -> bytes:
    """The request body, refused with 413 past the configured size."""
    length = request.content_length
    if length is not None and length > gw.max_body_bytes:
        raise ProblemError(Problem("Payload Too Large", 413, f"body over {gw.max_body_bytes} bytes"))
    return await request.get_data(cache=False, as_text=False, parse_form_data=False)  # parse_form_data: False, as by default


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode with a schema; a problem naming the field if it does not fit."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ProblemError(invalid(readable(str(exc)))) from None
    except msgspec.DecodeError as exc:
        raise ProblemError(Problem("Malformed JSON", 400, str(exc), errors=[FieldError("body", str(exc))])) from None
    except RecursionError:
        detail = "JSON nested too deeply"
        raise ProblemError(Problem("Malformed JSON", 400, detail, errors=[FieldError("body", detail)])) from None


def integer_param(name: str, value: str | None, low: int, high: int, meaning: str = "") -> int | None:
    """An integer query parameter from `low` to `high` (None when absent); ASCII digits only (protocol.parsing)."""
    if value is None:
        return None
    number = parse_integer(value)
    if number is None or not low <= number <= high:
        raise bad_param(name, meaning or f"an integer from {low} to {high}")
    return number


def number_param(name: str, value: str | None, low: float, high: float, default: float) -> float:
    """A decimal query parameter (`0.5`, `30`) from `low` to `high`; `default` when absent."""
    if value is None:
        return default
    number = parse_decimal(value)
    if number is None or not low <= number <= high:
        raise bad_param(name, f"a number from {low:g} to {high:g} (digits, optionally with a decimal point)")
    return number


def time_param(name: str, value: str | None) -> int | None:
    """Milliseconds since the epoch, given as such or as an RFC 3339 timestamp."""
    if value is None:
        return None
    try:
        ms = parse_integer(value)
        if ms is None:
            ms = parse_iso(value)
    except (ValueError, OverflowError):
        raise bad_param(name, "an RFC 3339 timestamp or milliseconds since the epoch") from None
    if not 0 <= ms < 2**53:
        raise bad_param(name, "out of range")
    return ms


def limit_param(value: str | None, default: int = 50) -> int:
    number = integer_param("limit", value, 1, 200)
    return default if number is None else number
