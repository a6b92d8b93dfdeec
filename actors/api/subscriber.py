"""Subscriber tokens on HTTP routes: who a token speaks for, and the inbox's key-or-token check.

A subscriber token (actors.auth) is issued with an API key for one user and expires; it
lets a browser or app read that user's notifications and nobody else's. SSE and
long-poll take only a token (`?token=` or `Authorization: Bearer`), the user being the
token's. The inbox routes take either an API key with the route's scope or a token
issued for the user in the path; a token for another user gets 403. A token reads; it
changes the inbox's state (mark read, archive, read_all: the routes that need `send`)
only if the API key that minted it had `send` (the token's "w" claim), else 403.
"""

from __future__ import annotations

import re
from typing import Any

from quart import request

from protocol.problems import FieldError, Problem
from reactor.clock import wall_ms

from ..auth import InvalidToken, bearer, read_token, verify_token
from .errors import ProblemError, authorize

_REALM = 'Bearer realm="herald"'
# [kid "."] base64url(claims) "." base64url(signature): an API key never has this shape.
_TOKEN_SHAPE = re.compile(r"^(?:[a-z0-9]+\.)?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?!\n)$")


def _unauthorized(field: str, detail: str, *, invalid: bool) -> ProblemError:
    """A 401 problem naming the field the credential came from."""
    challenge = f'{_REALM}, error="invalid_token"' if invalid else _REALM
    return ProblemError(Problem("Unauthorized", 401, detail, errors=[FieldError(field, detail)]), {"WWW-Authenticate": challenge})


def subscriber(gw: Any) -> str:
    """The user the request's subscriber token (`?token=` or `Authorization: Bearer`) was issued for; 401 otherwise."""
    token, field = request.args.get("token"), "token"
    if token is None:
        token, field = bearer(request.headers.get("Authorization")), "Authorization"
    if not token:
        raise _unauthorized(field, "a subscriber token is required: ?token=<token> or Authorization: Bearer <token>", invalid=False)
    try:
        return verify_token(gw.secret, token, wall_ms())
    except InvalidToken as exc:
        raise _unauthorized(field, str(exc), invalid=True) from None  # one answer for every reason


async def authorize_user(gw: Any, user_id: str, scope: str) -> None:
    """Let the request act for `user_id`: an API key granting `scope`, or a subscriber token issued for that user.

    A valid token for another user is refused with 403, an expired or tampered one with 401;
    a token minted by a key without `send` is refused with 403 where `scope` is `send`.
    """
    credential = bearer(request.headers.get("Authorization"))
    if credential is None or not _TOKEN_SHAPE.match(credential):
        await authorize(gw, scope)
        return
    try:
        token = read_token(gw.secret, credential, wall_ms())
    except InvalidToken as exc:
        try:
            await authorize(gw, scope)  # a configured API key may happen to contain one dot
        except ProblemError as problem:
            if problem.problem.status != 401:
                raise
            raise _unauthorized("Authorization", f"not an API key, and {exc}", invalid=True) from None
        return
    if token.user_id != user_id:
        detail = "this subscriber token is for another user: it reads only its own user's inbox"
        raise ProblemError(Problem("Forbidden", 403, detail, errors=[FieldError("Authorization", detail)]))
    if scope == "send" and not token.can_write:
        detail = "this subscriber token was minted with an API key without `send`: it reads the inbox, it does not change it"
        raise ProblemError(
            Problem("Forbidden", 403, detail, errors=[FieldError("Authorization", detail)]),
            {"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="send"'},
        )
