"""Real-time transports on one session model: WebSocket, Server-Sent Events and long-poll.

Each registers an actors.sessions.Session, replays what the client missed with
sessions.Replay (inbox and recent pushes, in delivery order, deduped by id), lets the
frames held meanwhile through, then goes live. The client resumes from the last id it
saw: `sync` frame or `?last_id=` (WebSocket), `Last-Event-ID` or `?last_event_id=`
(SSE), `?after=` (poll).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, request, websocket

from protocol.channels import Channel
from protocol.frames import (
    Ack,
    CloseCode,
    ErrorFrame,
    Ping,
    PollResponse,
    Pong,
    Sync,
    Synced,
    client_frame_decoder,
    frame_encoder,
)
from protocol.ids import is_notification_id, notification_id_ms
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from protocol.problems import Problem
from reactor.clock import wall_ms
from reactor.mailbox import MailboxClosed

from ..auth import InvalidToken, verify_token
from ..messages import Record, Register, Unregister
from ..sessions import Outgoing, Replay, Session
from .errors import ProblemError, bad_param, json_response, limit_param, number_param
from .subscriber import subscriber

_PONG = frame_encoder.encode(Pong())
POLL_DEFAULT_S = 30.0
POLL_MAX_S = 60.0
_IDLE = Outgoing("idle", None, b"")  # nothing arrived within a heartbeat


def blueprint(gw: Any) -> Blueprint:
    """The /v1/ws, /v1/sse and /v1/poll routes."""
    bp = Blueprint("realtime", __name__)

    @bp.websocket("/v1/ws")
    async def ws() -> None:
        await websocket.accept()
        try:
            user_id = verify_token(gw.secret, websocket.args.get("token", ""), wall_ms())
        except InvalidToken as exc:
            await websocket.close(CloseCode.UNAUTHORIZED, str(exc))
            return
        last_id = websocket.args.get("last_id")
        if last_id is not None and not is_notification_id(last_id):
            await websocket.close(CloseCode.PROTOCOL_ERROR, "last_id is not a notification id")
            return
        await _serve_websocket(gw, user_id, last_id)

    @bp.get("/v1/sse")
    async def sse() -> Response:
        user_id = subscriber(gw)
        _only_params("token", "last_event_id")
        last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or None
        if last_id is not None and not is_notification_id(last_id):
            raise bad_param("Last-Event-ID", "not a notification id (26 characters, Crockford base32)")
        response = Response(
            _sse_stream(gw, user_id, last_id),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # a stream lasts as long as the client stays (Quart cuts bodies at 60 s by default)
        return response

    @bp.get("/v1/poll")
    async def poll() -> Response:
        user_id = subscriber(gw)
        _only_params("token", "after", "timeout", "limit")
        after = request.args.get("after") or None
        if after is not None and not is_notification_id(after):
            raise bad_param("after", "not a notification id (26 characters, Crockford base32)")
        timeout = number_param("timeout", request.args.get("timeout"), 0, POLL_MAX_S, POLL_DEFAULT_S)
        limit = limit_param(request.args.get("limit"), 100)
        session = Session(user_id, gw.session_queue, hold=after is not None)
        items: list[Outgoing] = []
        try:
            async with registered(gw, session):
                items = await _caught_up(gw, session, after, limit)
                if not items:
                    with trio.move_on_after(timeout):
                        items = await _arrivals(gw, session, limit)
        except MailboxClosed:
            raise ProblemError(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"}) from None
        last_id = next((item.id for item in reversed(items) if item.id is not None), after)
        return json_response(PollResponse([msgspec.Raw(item.frame) for item in items], last_id))

    return bp


def _only_params(*known: str) -> None:
    """400 naming the first query parameter the route does not know."""
    unknown = sorted(set(request.args) - set(known))
    if unknown:
        raise bad_param(unknown[0], "unknown query parameter")


def _timeout_param(value: str | None) -> float:
    """?timeout= in seconds, 0 to POLL_MAX_S (POLL_DEFAULT_S when absent)."""
    if value is None:
        return POLL_DEFAULT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= POLL_MAX_S:  # also refuses nan
        raise bad_param("timeout", f"a number of seconds from 0 to {POLL_MAX_S:g}")
    return seconds


@asynccontextmanager
async def registered(gw: Any, session: Session) -> AsyncIterator[Session]:
    """Register the session for the block's duration (MailboxClosed if the node is stopping)."""
    await gw.registry.send(Register(session))
    gw.sessions_opened += 1
    try:
        yield session
    finally:
        session.close(1000, "")
        with trio.CancelScope(shield=True):
            try:
                await gw.registry.send(Unregister(session))
            except MailboxClosed:
                pass


async def _next_item(gw: Any, session: Session) -> Outgoing | None:
    """The next outbound frame; None once the session is closed or the node drains (callers bound the wait)."""
    try:
        return session.outbound.receive_nowait()
    except trio.WouldBlock:
        pass
    except (trio.EndOfChannel, trio.ClosedResourceError):
        return None
    if gw.draining.is_set():
        return None
    result: Outgoing | None = None
    async with trio.open_nursery() as nursery:

        async def drain_watch() -> None:
            await gw.draining.wait()
            nursery.cancel_scope.cancel()

        async def receive() -> None:
            nonlocal result
            try:
                result = await session.outbound.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(drain_watch)
        nursery.start_soon(receive)
    return result


# -- WebSocket


async def _serve_websocket(gw: Any, user_id: str, last_id: str | None) -> None:
    """Hold live frames until the client's first frame (a sync replays before them), or resume at once from ?last_id=."""
    session = Session(user_id, gw.session_queue, hold=True)
    try:
        async with registered(gw, session):
            await _websocket_loop(gw, session, last_id)
    except MailboxClosed:
        await websocket.close(CloseCode.SHUTTING_DOWN, "server shutting down; reconnect later")


async def _websocket_loop(gw: Any, session: Session, last_id: str | None) -> None:
    last_seen = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def sender() -> None:
            async for item in session.outbound:
                await websocket.send(item.frame.decode())
            await websocket.close(session.close_code or 1000, session.close_reason)
            nursery.cancel_scope.cancel()

        async def watchdog() -> None:
            while True:
                await trio.sleep(gw.heartbeat_s)
                if trio.current_time() - last_seen > 3 * gw.heartbeat_s:
                    session.close(CloseCode.HEARTBEAT_MISSED, "3 heartbeats missed")
                    return

        async def drain_watch() -> None:
            await gw.draining.wait()
            session.close(CloseCode.SHUTTING_DOWN, "server shutting down; reconnect later")

        nursery.start_soon(sender)
        nursery.start_soon(watchdog)
        nursery.start_soon(drain_watch)
        if last_id is not None:
            await _websocket_sync(gw, session, last_id)
        while True:
            raw = await websocket.receive()
            last_seen = trio.current_time()
            try:
                frame = client_frame_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await _release(session)
                await session.put(Outgoing("error", None, frame_encoder.encode(ErrorFrame(f"bad frame: {exc}"))))
                continue
            if isinstance(frame, Sync):
                await _websocket_sync(gw, session, frame.last_id)
                continue
            await _release(session)
            if isinstance(frame, Ping):
                await session.put(Outgoing("pong", None, _PONG))
            elif isinstance(frame, Ack):
                await _ack(gw, session, frame.id)


async def _release(session: Session) -> int:
    """Let the held frames through, in order, and go live (the sender task drains the queue); how many."""
    count = 0
    while (item := session.take_held()) is not None:
        if await session.put(item):
            count += 1
    return count


async def _websocket_sync(gw: Any, session: Session, last_id: str | None) -> None:
    """Replay what the client missed after `last_id` (everything retained when None), then `synced` with the count sent."""
    if last_id is not None and not is_notification_id(last_id):
        await _release(session)
        await session.put(Outgoing("error", None, frame_encoder.encode(ErrorFrame("sync: last_id is not a notification id"))))
        return
    session.hold()
    count = 0
    replay = Replay(gw.logstore, gw.registry, session, last_id)
    while page := await replay.next_page():
        for item in page:
            if await session.put(item):
                count += 1
    count += await _release(session)
    await session.put(Outgoing("synced", None, frame_encoder.encode(Synced(count))))


async def _ack(gw: Any, session: Session, notification_id: str) -> None:
    if not session.was_sent(notification_id):
        await session.put(Outgoing("error", None, frame_encoder.encode(ErrorFrame(f"ack of {notification_id}: not sent on this session"))))
        return
    event = StatusEvent(
        notification_id, session.user_id, Channel.WEB, Status.DELIVERED, wall_ms(), detail="acknowledged by the client",
        created_ms=notification_id_ms(notification_id),
    )
    await gw.recorder.send(Record((event,)))


# -- Server-Sent Events


def sse_event(item: Outgoing) -> bytes:
    """One SSE event: `id:` for notifications, `event:` the frame's type, `data:` its JSON (one line)."""
    head = f"id: {item.id}\n" if item.id is not None else ""
    return f"{head}event: {item.kind}\n".encode() + b"data: " + item.frame + b"\n\n"


async def _sse_stream(gw: Any, user_id: str, last_id: str | None) -> AsyncIterator[bytes]:
    """The event stream: replay after last_id (when given), `synced`, then live events and heartbeat comments.

    It ends when the session closes (slow consumer: an `error` event says why) or the node
    drains; a client disconnect cancels it, and leaving unregisters the session.
    """
    session = Session(user_id, gw.session_queue, hold=last_id is not None)
    try:
        async with registered(gw, session):
            yield b"retry: 1000\n\n"
            count = 0
            if last_id is not None:
                replay = Replay(gw.logstore, gw.registry, session, last_id)
                while page := await replay.next_page():
                    for item in page:
                        count += 1
                        yield sse_event(item)
                while (held := session.take_held()) is not None:
                    count += 1
                    yield sse_event(held)
            yield sse_event(Outgoing("synced", None, frame_encoder.encode(Synced(count))))
            while True:
                item: Outgoing | None = _IDLE
                with trio.move_on_after(gw.heartbeat_s):
                    item = await _next_item(gw, session)
                if item is None:
                    break
                yield b": heartbeat\n\n" if item is _IDLE else sse_event(item)
            reason = session.close_reason or "server shutting down; reconnect later"
            yield sse_event(Outgoing("error", None, frame_encoder.encode(ErrorFrame(reason))))
    except MailboxClosed:
        return


# -- long-poll


async def _caught_up(gw: Any, session: Session, after: str | None, limit: int) -> list[Outgoing]:
    """What the user has after `after` (at most `limit`): the replay, else the frames held meanwhile."""
    items: list[Outgoing] = []
    if after is None:
        return items
    replay = Replay(gw.logstore, gw.registry, session, after)
    while len(items) < limit and (page := await replay.next_page()):
        items.extend(page)
    del items[limit:]
    if not items:
        while len(items) < limit and (held := session.take_held()) is not None:
            items.append(held)
    return items


async def _arrivals(gw: Any, session: Session, limit: int) -> list[Outgoing]:
    """The next frame to arrive and what came with it (at most `limit`); [] if the session closes or the node drains."""
    first = await _next_item(gw, session)
    if first is None:
        return []
    items = [first]
    while len(items) < limit:
        try:
            items.append(session.outbound.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    return items
