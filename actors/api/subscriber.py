"""Subscriber tokens on HTTP routes: who a token speaks for, and the inbox's key-or-token check.

A subscriber token (actors.auth) is issued with an API key for one user and expires; it
lets a browser or app read that user's notifications and nobody else's. SSE and
long-poll take only a token (`?token=` or `Authorization: Bearer`), the user being the
token's. The inbox routes take either an API key with the route's scope or a token
issued for the user in the path; a token for another user gets 403.

What a browser may hold and ask is bounded (SubscriberLimits): every request made with a
subscriber token (poll, stream opens, inbox reads and changes, WebSocket `sync` frames)
takes a token from its user's bucket in the State port (429 with Retry-After when
empty), each user and each token holds a capped number of sessions on a node, and token
issuance is rate limited per API key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from quart import request

from protocol.problems import FieldError, Problem
from reactor.clock import wall_ms
from reactor.ports import State

from ..auth import InvalidToken, bearer, retry_after, verify_token
from ..sessions import SessionCaps
from .errors import ProblemError, authorize

MAX_TOKEN_TTL_MS = 86_400_000  # protocol.api.TokenRequest: a token lives at most a day


@dataclass
class SubscriberLimits:
    """Session caps, the per-user request rate of subscriber tokens, and token issuance per API key."""

    state: State
    caps: SessionCaps
    rate_per_s: float
    burst: float
    issue_rate_per_s: float
    issue_burst: float
    throttled: int = 0  # requests refused as over a rate, for tests and metrics

    def __post_init__(self) -> None:
        if min(self.rate_per_s, self.burst, self.issue_rate_per_s, self.issue_burst) <= 0:
            raise ValueError("subscriber and token-issuance rates and bursts must be above 0")

    async def take(self, user_id: str) -> float:
        """A token from the user's request bucket: 0.0 if admitted, else the seconds to wait."""
        wait = await self.state.take_tokens(f"ratelimit:subscriber:{user_id}", 1, self.burst, self.rate_per_s)
        self.throttled += wait > 0
        return wait

    async def take_issue(self, key_id: str) -> float:
        """A token from the API key's token-issuance bucket: 0.0 if admitted, else the seconds to wait."""
        wait = await self.state.take_tokens(f"ratelimit:tokens:{key_id}", 1, self.issue_burst, self.issue_rate_per_s)
        self.throttled += wait > 0
        return wait


def too_many_requests(field: str, detail: str, wait_s: float) -> ProblemError:
    """A 429 naming the field whose credential is over its rate, with Retry-After."""
    problem = Problem("Too Many Requests", 429, detail, errors=[FieldError(field, detail)])
    return ProblemError(problem, {"Retry-After": retry_after(wait_s)})


async def throttle_user(gw: Any, user_id: str, field: str = "Authorization") -> None:
    """Take one request from the user's subscriber bucket; 429 with Retry-After when it is empty."""
    wait = await gw.limits.take(user_id)
    if wait > 0:
        detail = f"user {user_id} is over the subscriber request rate ({gw.limits.rate_per_s:g}/s, burst {gw.limits.burst:g})"
        raise too_many_requests(field, detail, wait)


async def throttle_issue(gw: Any, key_id: str) -> None:
    """Take one token issuance from the API key's bucket; 429 with Retry-After when it is empty."""
    wait = await gw.limits.take_issue(key_id)
    if wait > 0:
        limits = gw.limits
        detail = f"API key {key_id} is over its token-issuance rate ({limits.issue_rate_per_s:g}/s, burst {limits.issue_burst:g})"
        raise too_many_requests("Authorization", detail, wait)


def token_id(token: str) -> str:
    """A short stable name for a subscriber token (the token itself is a credential: never a key or a log line)."""
    return hashlib.blake2b(token.encode(), digest_size=12).hexdigest()


def valid_until_ms(secret: bytes, token: str, now_ms: int) -> int:
    """When verify_token starts refusing a token valid at `now_ms` (to within a second), from verify_token alone.

    verify_token is the one API for tokens (their format is not this module's business);
    validity only ends with time, so bisecting on its `now_ms` finds the expiry in 17
    checks. Past MAX_TOKEN_TTL_MS it answers that bound (the caller checks again then).
    """
    low, high = now_ms, now_ms + MAX_TOKEN_TTL_MS + 1000
    try:
        verify_token(secret, token, high)
        return high
    except InvalidToken:
        pass
    while high - low > 1000:
        middle = (low + high) // 2
        try:
            verify_token(secret, token, middle)
            low = middle
        except InvalidToken:
            high = middle
    return high


class Subscriber(NamedTuple):
    """Who a subscriber token speaks for, and the token."""

    user_id: str
    token: str

_REALM = 'Bearer realm="herald"'
# base64url(claims) "." base64url(signature): an API key never has this shape.
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?!\n)$")


def _unauthorized(field: str, detail: str, *, invalid: bool) -> ProblemError:
    """A 401 problem naming the field the credential came from."""
    challenge = f'{_REALM}, error="invalid_token"' if invalid else _REALM
    return ProblemError(Problem("Unauthorized", 401, detail, errors=[FieldError(field, detail)]), {"WWW-Authenticate": challenge})


async def subscriber(gw: Any) -> Subscriber:
    """The user the request's subscriber token (`?token=` or `Authorization: Bearer`) was issued for; 401 otherwise.

    The request counts against the user's rate (429 with Retry-After past it).
    """
    token, field = request.args.get("token"), "token"
    if token is None:
        token, field = bearer(request.headers.get("Authorization")), "Authorization"
    if not token:
        raise _unauthorized(field, "a subscriber token is required: ?token=<token> or Authorization: Bearer <token>", invalid=False)
    try:
        user_id = verify_token(gw.secret, token, wall_ms())
    except InvalidToken as exc:
        raise _unauthorized(field, f"the subscriber token is not valid: {exc}", invalid=True) from None
    await throttle_user(gw, user_id, field)
    return Subscriber(user_id, token)


async def authorize_user(gw: Any, user_id: str, scope: str) -> None:
    """Let the request act for `user_id`: an API key granting `scope`, or a subscriber token issued for that user.

    A valid token for another user is refused with 403, an expired or tampered one with 401.
    """
    credential = bearer(request.headers.get("Authorization"))
    if credential is None or not _TOKEN_SHAPE.match(credential):
        await authorize(gw, scope)
        return
    try:
        token_user = verify_token(gw.secret, credential, wall_ms())
    except InvalidToken as exc:
        try:
            await authorize(gw, scope)  # a configured API key may happen to contain one dot
        except ProblemError as problem:
            if problem.problem.status != 401:
                raise
            raise _unauthorized("Authorization", f"neither an API key nor a valid subscriber token: {exc}", invalid=True) from None
        return
    await throttle_user(gw, token_user)  # a token's requests count against its user's rate (an API key has its own)
    if token_user != user_id:
        detail = "this subscriber token is for another user: it reads only its own user's inbox"
        raise ProblemError(Problem("Forbidden", 403, detail, errors=[FieldError("Authorization", detail)]))
