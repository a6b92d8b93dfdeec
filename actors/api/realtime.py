"""Real-time transports on one session model: WebSocket, Server-Sent Events and long-poll.

Each registers an actors.registry.Session, replays what the client missed with
sessions.Replay (inbox and recent pushes, in delivery order, deduped by id), lets the
frames held meanwhile through, then goes live. The client resumes from the last id it
saw: `sync` frame or `?last_id=` (WebSocket), `Last-Event-ID` or `?last_event_id=`
(SSE), `?after=` (poll); another user's notification id there is refused (WebSocket
close 4101, 400 on SSE and poll).

A notification a client sees makes the web channel `delivered` (protocol.lifecycle): over
the WebSocket when the client acks it; over SSE and long-poll, which have no ack, once it
is written to the stream or put in the answer. Once per session; a second tab adds nothing.

Limits (actors/api/subscriber.py SubscriberLimits): opening a session, a poll and a
WebSocket `sync` take a request from the user's rate; a user and a token hold a capped
number of sessions on a node (over it: 429 with Retry-After, WebSocket close 4004); an
open WebSocket or SSE stream ends when its token expires (close 4003, SSE an `error`
event with code 4003); a WebSocket message over MAX_CLIENT_MESSAGE_BYTES is refused by
the server (close 1009) without being buffered (websocket_limit.py).

The WebSocket is served on ASGI in front of Quart, one task per session
(websocket_endpoint.py); SSE and long-poll are Quart routes here. Whatever the transport, a
session's task sleeps in Session.wait/interruptible until a frame is queued or the session
closes; a draining node closes every session at once (SessionCaps.close_all).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import msgspec
import trio
from quart import Blueprint, Response, request, websocket

from protocol.channels import Channel
from protocol.frames import CloseCode, ErrorFrame, PollResponse, Synced, frame_encoder
from protocol.ids import is_notification_id, notification_id_ms
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from protocol.problems import FieldError, Problem
from reactor.clock import wall_ms
from reactor.mailbox import MailboxClosed

from ..messages import RecordEvents, Register, Unregister
from ..registry import Outgoing, Session
from . import websocket_limit
from .errors import ProblemError, bad_param, json_response, limit_param, number_param, served
from .replay import Replay, belongs_to_another_user
from .subscriber import Subscriber, subscriber, token_id

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

log = logging.getLogger("herald.gateway")

POLL_DEFAULT_S = 30.0
POLL_MAX_S = 60.0
_IDLE = Outgoing("idle", None, b"")  # nothing arrived within a heartbeat
TOKEN_EXPIRED = "token expired: fetch a new token, then reconnect and resume"
SESSIONS_RETRY_S = 5  # Retry-After of a session refused as over a cap: a slot frees when another session ends
NOT_THIS_USERS = "not a notification of this user"
_OVER_SSE = "delivered over SSE"


class TooManySessions(Exception):
    """The user or the token already holds as many sessions as the node allows."""


class TokenExpiry:
    """When a session's token expires (wall clock), as a deadline on Trio's clock (checked again when it comes)."""

    def __init__(self, expires_ms: int) -> None:
        self.expires_ms = expires_ms
        self.deadline = self._next_deadline()

    def _next_deadline(self) -> float:
        return trio.current_time() + max(0, self.expires_ms - wall_ms()) / 1000

    def expired(self) -> bool:
        """Whether the token has expired; before the deadline this costs one comparison."""
        if trio.current_time() < self.deadline:
            return False
        if wall_ms() >= self.expires_ms:
            return True
        self.deadline = self._next_deadline()  # the wall clock moved slower than Trio's: wait the rest
        return False


def blueprint(gw: Gateway) -> Blueprint:
    """The /v1/ws, /v1/sse and /v1/poll routes."""
    bp = Blueprint("realtime", __name__)

    websocket_limit.install()

    @bp.websocket("/v1/ws")
    async def ws() -> None:
        """Declared here for the routing table (/openapi.json's check, a 421 on nodes of other roles); the front end
        serves /v1/ws on ASGI before a request reaches Quart (websocket_endpoint.SessionSockets)."""
        log.error("WebSocket %s reached the Quart app: it is served by websocket_endpoint.SessionSockets in front of it", websocket.path)
        await websocket.close(1011, "internal error")

    @bp.get("/v1/sse")
    async def sse() -> Response:
        who = await subscriber(gw)
        field = "Last-Event-ID" if request.headers.get("Last-Event-ID") else "last_event_id"
        last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or None
        if last_id is not None and not is_notification_id(last_id):
            raise bad_param(field, "not a notification id (26 characters, Crockford base32)")
        if last_id is not None and await belongs_to_another_user(gw.logstore, who.user_id, last_id):
            raise bad_param(field, NOT_THIS_USERS)
        refusal = gw.limits.caps.check(who.user_id, token_id(who.token))
        if refusal is not None:  # checked again when the stream registers (another request may take the slot first)
            raise _too_many_sessions(refusal)
        response = Response(
            _sse_stream(gw, who, last_id),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # a stream lasts as long as the client stays (Quart cuts bodies at 60 s by default)
        return response

    @bp.get("/v1/poll")
    async def poll() -> Response:
        who = await subscriber(gw)
        after = request.args.get("after") or None
        if after is not None and not is_notification_id(after):
            raise bad_param("after", "not a notification id (26 characters, Crockford base32)")
        timeout = number_param("timeout", request.args.get("timeout"), 0, POLL_MAX_S, POLL_DEFAULT_S)
        limit = limit_param(request.args.get("limit"), 100)
        if after is not None and await belongs_to_another_user(gw.logstore, who.user_id, after):
            raise bad_param("after", NOT_THIS_USERS)
        session = Session(who.user_id, gw.session_queue, hold=after is not None, token_id=token_id(who.token))
        items: list[Outgoing] = []
        try:
            async with registered(gw, session, "poll"):
                items = await _caught_up(gw, session, after, limit)
                if not items:
                    with trio.move_on_after(timeout):
                        items = await _arrivals(gw, session, limit)
        except MailboxClosed:
            raise ProblemError(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"}) from None
        except TooManySessions as exc:
            raise _too_many_sessions(str(exc)) from None
        await _handed_over(gw, session, items, "returned by a long-poll")
        last_id = next((item.id for item in reversed(items) if item.id is not None), after)
        return json_response(PollResponse([msgspec.Raw(item.frame) for item in items], last_id))

    return bp


def _too_many_sessions(detail: str) -> ProblemError:
    """429: the user or token is at its session cap (Retry-After: a slot frees when one of them ends)."""
    problem = Problem("Too Many Requests", 429, detail, errors=[FieldError("Authorization", detail)])
    return ProblemError(problem, {"Retry-After": str(SESSIONS_RETRY_S)})


@asynccontextmanager
async def registered(gw: Gateway, session: Session, transport: str) -> AsyncIterator[Session]:
    """Register the session for the block's duration, within the caps; counted open per transport (websocket, sse, poll).

    TooManySessions if the user or token is at its cap, MailboxClosed if the node is stopping.
    """
    refusal = gw.limits.caps.admit(session)
    if refusal is not None:
        raise TooManySessions(refusal)
    try:
        await served(gw.registry, "registry mailbox").send(Register(session))
        gw.sessions_opened += 1
        gw.sessions.enter(transport)
        if gw.draining.is_set():  # admitted after the drain closed the others (SessionCaps.close_all)
            session.close(CloseCode.SHUTTING_DOWN, "server shutting down; reconnect later")
        try:
            yield session
        finally:
            gw.sessions.leave(transport)
            session.close(1000, "")
            with trio.CancelScope(shield=True):
                try:
                    await served(gw.registry, "registry mailbox").send(Unregister(session))
                except MailboxClosed:
                    pass
    finally:
        gw.limits.caps.release(session)


async def _next_item(gw: Gateway, session: Session) -> Outgoing | None:
    """The next outbound frame; None once the session is closed (a draining node closes it) (callers bound the wait)."""
    while (item := session.next_nowait()) is None:
        if session.closed or gw.draining.is_set():
            return None
        await session.wait()
    return item


def delivered_event(session: Session, notification_id: str, how: str) -> StatusEvent:
    """The client event that makes the web channel `delivered`: a client saw it."""
    return StatusEvent(
        notification_id, session.user_id, Channel.WEB, Status.DELIVERED, wall_ms(), detail=how,
        created_ms=notification_id_ms(notification_id), client=True,
    )


async def _handed_over(gw: Gateway, session: Session, items: list[Outgoing], how: str) -> None:
    """SSE and long-poll have no ack: a notification handed to the client is `delivered` (once per session).

    Called once the frames are written (SSE) or in the answer (poll). The Recorder may be
    gone when the node stops: the status then stays `sent`, which is still final.
    """
    events = tuple(
        delivered_event(session, item.id, how)
        for item in items
        if item.kind == "notification" and item.id is not None and session.first_ack(item.id)
    )
    if events:
        try:
            await gw.recorder.send(RecordEvents(events))
        except MailboxClosed:
            pass


# -- Server-Sent Events


def sse_event(item: Outgoing) -> bytes:
    """One SSE event: `id:` for notifications, `event:` the frame's type, `data:` its JSON (one line)."""
    head = f"id: {item.id}\n" if item.id is not None else ""
    return f"{head}event: {item.kind}\n".encode() + b"data: " + item.frame + b"\n\n"


def _sse_error(detail: str, code: int) -> bytes:
    return sse_event(Outgoing("error", None, frame_encoder.encode(ErrorFrame(detail, code))))


async def _sse_stream(gw: Gateway, who: Subscriber, last_id: str | None) -> AsyncIterator[bytes]:
    """The event stream: replay after last_id (when given), `synced`, then live events and heartbeat comments.

    It ends when the session closes (slow consumer, token expired: an `error` event says
    why, with the close code a WebSocket would get) or the node drains; a client
    disconnect cancels it, and leaving unregisters the session.
    """
    session = Session(who.user_id, gw.session_queue, hold=last_id is not None, token_id=token_id(who.token))
    expiry = TokenExpiry(who.expires_ms)
    try:
        async with registered(gw, session, "sse"):
            yield b"retry: 1000\n\n"
            count = 0
            if last_id is not None:
                replay = Replay(gw.logstore, served(gw.registry, "registry mailbox"), session, last_id)
                while page := await replay.next_page():
                    for replayed in page:
                        count += 1
                        yield sse_event(replayed)
                    await _handed_over(gw, session, page, _OVER_SSE)
                while (held := session.take_held()) is not None:
                    count += 1
                    yield sse_event(held)
                    await _handed_over(gw, session, [held], _OVER_SSE)
            yield sse_event(Outgoing("synced", None, frame_encoder.encode(Synced(count))))
            while not expiry.expired():
                item: Outgoing | None = _IDLE
                with trio.move_on_at(min(trio.current_time() + gw.heartbeat_s, expiry.deadline)):
                    item = await _next_item(gw, session)
                if item is None:
                    break
                if item is _IDLE:
                    yield b": heartbeat\n\n"
                else:
                    yield sse_event(item)
                    await _handed_over(gw, session, [item], _OVER_SSE)
            else:
                session.close(CloseCode.TOKEN_EXPIRED, TOKEN_EXPIRED)
            reason = session.close_reason or "server shutting down; reconnect later"
            yield _sse_error(reason, session.close_code or CloseCode.SHUTTING_DOWN)
    except MailboxClosed:
        return
    except TooManySessions as exc:  # another stream took the last slot since the route checked
        yield _sse_error(str(exc), CloseCode.TOO_MANY_SESSIONS)


# -- long-poll


async def _caught_up(gw: Gateway, session: Session, after: str | None, limit: int) -> list[Outgoing]:
    """What the user has after `after` (at most `limit`): the replay, else the frames held meanwhile."""
    items: list[Outgoing] = []
    if after is None:
        return items
    replay = Replay(gw.logstore, served(gw.registry, "registry mailbox"), session, after)
    while len(items) < limit and (page := await replay.next_page()):
        items.extend(page)
    del items[limit:]
    if not items:
        while len(items) < limit and (held := session.take_held()) is not None:
            items.append(held)
    return items


async def _arrivals(gw: Gateway, session: Session, limit: int) -> list[Outgoing]:
    """The next frame to arrive and what came with it (at most `limit`); [] if the session closes or the node drains."""
    first = await _next_item(gw, session)
    if first is None:
        return []
    items = [first]
    while len(items) < limit and (item := session.next_nowait()) is not None:
        items.append(item)
    return items
