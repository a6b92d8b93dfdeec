"""What every request must fit before its handler runs, from the OpenAPI catalogue (openapi.OPERATIONS).

- Query parameters: a route takes those its operation lists; any other is a 400 naming it.
  One rule for every route, the WebSocket included (its parameters are in openapi.WEBSOCKET).
- Body type: a route whose body is JSON takes `application/json` or a `+json` type (with
  at most a `charset=utf-8` parameter), or no Content-Type at all; anything else is a 415
  naming the expected type, field `Content-Type`. A route whose body is not JSON (the
  one-click unsubscribe, which mail clients POST as a form) is left alone.

The Quart app runs `check_request` and `check_websocket` before every handler; the ASGI
fast path for POST /v1/notifications calls `check` itself. The table is built from the
catalogue that /openapi.json is built from, so the document and the check cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl

from quart import request, websocket

from protocol.problems import FieldError, Problem

from .errors import ProblemError, bad_param
from .openapi import OPERATIONS, WEBSOCKET, Auth

JSON_TYPE = "application/json"
_EXPECTED = f"{JSON_TYPE} (or a +json type), or no Content-Type"

# The query parameter a credential may come as: the subscriber token (security scheme subscriberTokenQuery).
_CREDENTIAL_QUERY = {Auth.SUBSCRIBER: frozenset({"token"})}

# (method, rule) -> the query parameters the route takes
QUERY: dict[tuple[str, str], frozenset[str]] = {
    (op.method, op.rule): frozenset(p.name for p in op.params if p.location == "query") | _CREDENTIAL_QUERY.get(op.auth, frozenset())
    for op in OPERATIONS
}
for _rule, _spec in WEBSOCKET.items():
    QUERY[("GET", _rule)] = frozenset(p["name"] for p in _spec["parameters"] if p["in"] == "query")
# (method, rule) of the routes whose body is JSON
JSON_BODY: frozenset[tuple[str, str]] = frozenset(
    (op.method, op.rule) for op in OPERATIONS if op.body is not None and JSON_TYPE in op.body.content
)


def is_json_type(content_type: str) -> bool:
    """Whether a Content-Type value names JSON: application/json or application/<x>+json, charset utf-8 if any."""
    media, *parameters = (part.strip() for part in content_type.split(";"))
    kind, _, subtype = media.lower().partition("/")
    if kind != "application" or not (subtype == "json" or (subtype.endswith("+json") and len(subtype) > 5)):
        return False
    for parameter in parameters:
        name, equals, value = parameter.partition("=")
        if not equals or not name.strip():
            return False
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return False
    return True


def check(method: str, rule: str, query_names: Iterable[str], content_type: str | None) -> None:
    """Raise the problem a request to `rule` deserves for its query parameters or body type; None if it fits."""
    key = ("GET" if method == "HEAD" else method, rule)
    known = QUERY.get(key)
    if known is not None:
        unknown = sorted(set(query_names) - known)
        if unknown:
            raise bad_param(unknown[0], "unknown query parameter")
    if key in JSON_BODY and content_type is not None and not is_json_type(content_type):
        detail = f"Content-Type: expected {_EXPECTED}, got {content_type!r}"
        raise ProblemError(Problem("Unsupported Media Type", 415, detail, errors=[FieldError("Content-Type", f"expected {_EXPECTED}")]))


def query_names(query_string: bytes) -> list[str]:
    """The parameter names of a raw query string (the ASGI scope's)."""
    return [name for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)]


async def check_request() -> None:
    """Quart before_request: `check` for the matched route (unmatched paths are the router's 404/405)."""
    if request.url_rule is None or request.method == "OPTIONS":
        return
    check(request.method, request.url_rule.rule, request.args.keys(), request.headers.get("Content-Type"))


async def check_websocket() -> None:
    """Quart before_websocket: unknown query parameters are refused before the handshake is accepted."""
    if websocket.url_rule is not None:
        check("GET", websocket.url_rule.rule, websocket.args.keys(), None)
