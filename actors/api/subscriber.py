"""Subscriber tokens on HTTP routes: who a token speaks for, and the inbox's key-or-token check.

A subscriber token (actors/domain/tokens.py) is issued with an API key for one user and expires; it
lets a browser or app read that user's notifications and nobody else's. SSE and
long-poll take only a token (`?token=` or `Authorization: Bearer`), the user being the
token's. The inbox routes take either an API key with the route's scope or a token
issued for the user in the path; a token for another user gets 403. A token reads; it
changes the inbox's state (mark read, archive, read_all: the routes that need `send`)
only if the API key that minted it had `send` (the token's "w" claim), else 403.

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
from typing import TYPE_CHECKING, NamedTuple

from quart import request

from protocol.problems import FieldError, Problem
from reactor.clock import wall_ms
from reactor.ports import State

from ..domain.api_keys import bearer
from ..domain.tokens import InvalidToken, read_token
from ..services.credentials import learn_kid
from ..registry import Session
from .errors import ProblemError, authorize, retry_after

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway


class SessionCaps:
    """How many sessions each user and each subscriber token holds on this node, within caps; and which they are.

    Pure bookkeeping, on the front end's Trio thread: `admit` and `release` never wait, so
    a check and its count cannot interleave with another request's. A draining node closes
    every admitted session at once (`close_all`): no session runs a task of its own to watch
    for the drain.
    """

    def __init__(self, per_user: int, per_token: int) -> None:
        if per_user < 1 or per_token < 1:
            raise ValueError("session caps must be at least 1")
        self.per_user = per_user
        self.per_token = per_token
        self._users: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self._live: set[Session] = set()
        self.refused = 0

    def refusal(self, user_id: str, token_id: str) -> str | None:
        """Why one more session of this user and token would be refused; None if it fits."""
        if self._users.get(user_id, 0) >= self.per_user:
            return f"user {user_id} already holds {self.per_user} sessions on this node (WebSocket, SSE and long-poll together)"
        if self._tokens.get(token_id, 0) >= self.per_token:
            return f"this subscriber token already holds {self.per_token} sessions on this node"
        return None

    def check(self, user_id: str, token_id: str) -> str | None:
        """refusal(), counting a refusal (a route that answers 429 before it makes a session)."""
        reason = self.refusal(user_id, token_id)
        self.refused += reason is not None
        return reason

    def admit(self, session: Session) -> str | None:
        """Count the session in, or say why not (nothing is counted then)."""
        reason = self.refusal(session.user_id, session.token_id)
        if reason is not None:
            self.refused += 1
            return reason
        self._users[session.user_id] = self._users.get(session.user_id, 0) + 1
        self._tokens[session.token_id] = self._tokens.get(session.token_id, 0) + 1
        self._live.add(session)
        return None

    def release(self, session: Session) -> None:
        """Count an admitted session out."""
        self._live.discard(session)
        for counts, key in ((self._users, session.user_id), (self._tokens, session.token_id)):
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]

    def held(self, user_id: str) -> int:
        """Sessions the user holds on this node."""
        return self._users.get(user_id, 0)

    def live(self) -> int:
        """Sessions admitted and not released, all users together."""
        return len(self._live)

    def close_all(self, code: int, reason: str) -> None:
        """Close every admitted session (each one's task then ends it: close frame, SSE error event, poll answer)."""
        for session in list(self._live):
            session.close(code, reason)


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


async def throttle_user(gw: Gateway, user_id: str, field: str = "Authorization") -> None:
    """Take one request from the user's subscriber bucket; 429 with Retry-After when it is empty."""
    wait = await gw.limits.take(user_id)
    if wait > 0:
        detail = f"user {user_id} is over the subscriber request rate ({gw.limits.rate_per_s:g}/s, burst {gw.limits.burst:g})"
        raise too_many_requests(field, detail, wait)


async def throttle_issue(gw: Gateway, key_id: str) -> None:
    """Take one token issuance from the API key's bucket; 429 with Retry-After when it is empty."""
    wait = await gw.limits.take_issue(key_id)
    if wait > 0:
        limits = gw.limits
        detail = f"API key {key_id} is over its token-issuance rate ({limits.issue_rate_per_s:g}/s, burst {limits.issue_burst:g})"
        raise too_many_requests("Authorization", detail, wait)


def token_id(token: str) -> str:
    """A short stable name for a subscriber token (the token itself is a credential: never a key or a log line)."""
    return hashlib.blake2b(token.encode(), digest_size=12).hexdigest()


class Subscriber(NamedTuple):
    """Who a subscriber token speaks for, and the token."""

    user_id: str
    token: str
    expires_ms: int  # wall clock: a stream open past it is closed (4003)

_REALM = 'Bearer realm="herald"'
# [kid "."] base64url(claims) "." base64url(signature): an API key never has this shape.
_TOKEN_SHAPE = re.compile(r"^(?:[a-z0-9]+\.)?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?!\n)$")


def _unauthorized(field: str, detail: str, *, invalid: bool) -> ProblemError:
    """A 401 problem naming the field the credential came from."""
    challenge = f'{_REALM}, error="invalid_token"' if invalid else _REALM
    return ProblemError(Problem("Unauthorized", 401, detail, errors=[FieldError(field, detail)]), {"WWW-Authenticate": challenge})


async def subscriber(gw: Gateway) -> Subscriber:
    """The user the request's subscriber token (`?token=` or `Authorization: Bearer`) was issued for; 401 otherwise.

    The request counts against the user's rate (429 with Retry-After past it).
    """
    credential, field = request.args.get("token"), "token"
    if credential is None:
        credential, field = bearer(request.headers.get("Authorization")), "Authorization"
    if not credential:
        raise _unauthorized(field, "a subscriber token is required: ?token=<token> or Authorization: Bearer <token>", invalid=False)
    try:
        await learn_kid(gw.key_ring, credential)
        token = read_token(gw.secret, credential, wall_ms())
    except InvalidToken as exc:
        raise _unauthorized(field, str(exc), invalid=True) from None  # one answer for every reason
    await throttle_user(gw, token.user_id, field)
    return Subscriber(token.user_id, credential, token.expires_ms)


async def authorize_user(gw: Gateway, user_id: str, scope: str) -> None:
    """Let the request act for `user_id`: an API key granting `scope`, or a subscriber token issued for that user.

    A valid token for another user is refused with 403, an expired or tampered one with 401;
    a token minted by a key without `send` is refused with 403 where `scope` is `send`.
    """
    credential = bearer(request.headers.get("Authorization"))
    if credential is None or not _TOKEN_SHAPE.match(credential):
        await authorize(gw, scope)
        return
    try:
        await learn_kid(gw.key_ring, credential)
        token = read_token(gw.secret, credential, wall_ms())
    except InvalidToken as exc:
        try:
            await authorize(gw, scope)  # a configured API key may happen to contain one dot
        except ProblemError as problem:
            if problem.problem.status != 401:
                raise
            raise _unauthorized("Authorization", f"not an API key, and {exc}", invalid=True) from None
        return
    await throttle_user(gw, token.user_id)  # a token's requests count against its user's rate (an API key has its own)
    if token.user_id != user_id:
        detail = "this subscriber token is for another user: it reads only its own user's inbox"
        raise ProblemError(Problem("Forbidden", 403, detail, errors=[FieldError("Authorization", detail)]))
    if scope == "send" and not token.can_write:
        detail = "this subscriber token was minted with an API key without `send`: it reads the inbox, it does not change it"
        raise ProblemError(
            Problem("Forbidden", 403, detail, errors=[FieldError("Authorization", detail)]),
            {"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="send"'},
        )
