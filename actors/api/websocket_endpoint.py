"""The subscriber WebSocket, /v1/ws, straight on ASGI in front of the Quart app: one task per session.

A node holds tens of thousands of idle sessions, so what one costs is what matters here
(docs/performance.md, "Idle sessions"). Through Quart a session had eight tasks and two
nurseries (Quart's reader and handler, a sender, a heartbeat watchdog, a drain watch, a token
expiry watch) and Quart's websocket objects; here it has the one task Hypercorn runs the ASGI
app in. That task does everything in turn: it sends the queued frames, then waits for the
client's next message in `Session.interruptible`, which a frame being queued, the session
closing (slow consumer, the node draining: SessionCaps.close_all) or the next deadline
(heartbeats missed, token expiry) cuts short.

The protocol is realtime.py's (module docstring there): the same checks in the same order,
the same frames and close codes. Query parameters are checked before the handshake is
accepted (request_rules: an unknown one is a 400 problem); the token, the user's request
rate and `last_id` after it, each refused with its close code.

Frames the task sends itself (a replay, `synced`, pong, errors) go out directly, in order
with the queued live frames: a sync holds live frames, sends what was queued before, then
the replay, then the held frames (Session.take_held), then `synced`.

No permessage-deflate: Hypercorn accepts it whenever a client offers it (every browser
does), and wsproto then keeps a zlib stream per direction for the connection's life, about
100 KiB of RSS per session once the first frame is sent (bench_sessions.py --deflate) to
save a few hundred bytes on frames of a few hundred bytes. `install()` makes the handshake
decline it; a client that offers it goes on uncompressed (RFC 7692: the extension is optional).
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import parse_qsl

import msgspec
import trio
from hypercorn.protocol import ws_stream
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope, WebsocketScope

from protocol.frames import Ack, CloseCode, ErrorFrame, Ping, Pong, Sync, Synced, client_frame_decoder, frame_encoder
from protocol.ids import is_notification_id
from protocol.problems import FieldError, Problem
from reactor.clock import wall_ms
from reactor.mailbox import MailboxClosed

from ..domain.tokens import InvalidToken, read_token
from ..messages import RecordEvents
from ..registry import Session
from ..services.credentials import learn_kid
from .direct_frames import app_channel, send_rest, write_now
from .errors import Answer, ProblemError, problem_answer, retry_after, served
from .realtime import NOT_THIS_USERS, TOKEN_EXPIRED, TokenExpiry, TooManySessions, delivered_event, registered
from .replay import Replay, belongs_to_another_user
from .request_rules import check, query_names
from .subscriber import Subscriber, token_id

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

log = logging.getLogger("herald.gateway")

PATH = "/v1/ws"
_PONG = frame_encoder.encode(Pong())
_SHUTTING_DOWN = "server shutting down; reconnect later"

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class UncompressedHandshake(ws_stream.Handshake):
    """Hypercorn's WebSocket handshake, deaf to the client's extension offers (permessage-deflate)."""

    def __init__(self, headers: list[tuple[bytes, bytes]], http_version: str) -> None:
        super().__init__(headers, http_version)
        self.extensions = None


def install() -> None:
    """Let every WebSocket Hypercorn accepts from now on decline permessage-deflate (idempotent)."""
    ws_stream.Handshake = UncompressedHandshake  # type: ignore[misc]


class SessionSockets:
    """ASGI: a WebSocket to /v1/ws is a subscriber session served here; everything else goes to `app`."""

    def __init__(self, app: ASGIFramework, gw: Gateway) -> None:
        self.app = app
        self.gw = gw
        install()

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "websocket" and scope["path"] == PATH:
            await serve(self.gw, scope, Socket(receive, send))
        else:
            await self.app(scope, receive, send)


WAKE: dict[str, Any] = {"type": "herald.wake"}  # put in the session's receive channel to wake its task (Socket.nudge)


class Socket:
    """The ASGI side of one WebSocket: what the session's task receives and sends."""

    __slots__ = ("receive", "_send", "closed", "status")

    def nudge(self) -> bool:
        """Wake the session's task waiting in `receive` with WAKE put in Hypercorn's channel to the app (the cheap way:
        no Cancelled raised through the receive); False where that channel cannot be reached (another server, closed)."""
        channel = app_channel(self._send)
        if channel is None:
            return False
        try:
            channel.send_nowait(WAKE)
        except trio.WouldBlock:
            return True  # the client's messages fill it: the task wakes to them, and sends what is queued
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def __init__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        self.receive = receive
        self._send = send
        self.closed = False  # a close frame was sent, or the client left
        self.status = 0  # the handshake's answer: 101 once accepted, or the refusal's HTTP status

    async def accept(self) -> None:
        self.status = 101
        await self._send({"type": "websocket.accept", "subprotocol": None, "headers": []})

    async def reject(self, answer: Answer) -> None:
        """Refuse the handshake with an HTTP answer (ASGI's websocket.http.response); the connection closes after it, as
        Hypercorn's own refusals close it (the client asked for an upgrade, not a keep-alive exchange)."""
        headers: list[tuple[bytes, bytes]] = [(b"content-type", answer.content_type.encode()), (b"content-length", str(len(answer.body)).encode()),
                                              (b"connection", b"close")]
        headers += [(name.lower().encode(), value.encode("latin-1")) for name, value in answer.headers.items()]
        self.status = answer.status
        await self._send({"type": "websocket.http.response.start", "status": answer.status, "headers": headers})
        await self._send({"type": "websocket.http.response.body", "body": answer.body, "more_body": False})
        self.closed = True

    async def send(self, frame: bytes) -> None:
        """Send a text frame: straight to the socket when nothing is in the way (direct_frames.py), else through ASGI."""
        written = write_now(self._send, frame)
        if written is None:
            await self._send({"type": "websocket.send", "bytes": None, "text": frame.decode()})
        elif written[1]:  # the kernel took part of it (or none): the rest waits under the connection's lock
            await send_rest(*written)

    async def close(self, code: int, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


async def serve(gw: Gateway, scope: WebsocketScope, socket: Socket) -> None:
    """One WebSocket from its handshake to its end; an unexpected error is logged and closes it (1011)."""
    try:
        started = trio.current_time()
        if (await socket.receive())["type"] != "websocket.connect":
            return
        try:
            admitted = await _handshake(gw, scope, socket)
        finally:  # herald_http_requests_total: the handshake, timed to its accept or refusal (never the session's length)
            gw.requests.observe("GET", PATH, socket.status, trio.current_time() - started)
        if admitted is not None:  # the handshake's frame and what it read are gone while the session lasts
            await _serve_session(gw, socket, *admitted)
    except Exception:
        log.exception("unhandled error on WebSocket %s", PATH)
        await socket.close(1011, "internal error")


def _check_key(scope: WebsocketScope) -> None:
    """RFC 6455 4.2.1: Sec-WebSocket-Key is the base64 of 16 bytes; a handshake with another is refused (400), not upgraded.
    (Hypercorn refuses one without a key or with another version, but takes any key.)"""
    for name, value in scope["headers"]:
        if name.lower() == b"sec-websocket-key":
            try:
                if len(b64decode(value, validate=True)) == 16:
                    return
            except (binascii.Error, ValueError):
                pass
            detail = "Sec-WebSocket-Key: the base64 of 16 random bytes (RFC 6455)"
            raise ProblemError(Problem("Bad Request", 400, detail, errors=[FieldError("Sec-WebSocket-Key", detail)]))


async def _handshake(gw: Gateway, scope: WebsocketScope, socket: Socket) -> tuple[Subscriber, str | None] | None:
    """Accept the WebSocket and check who it is for: the subscriber and `last_id`, or None if it was refused (and closed)."""
    names = query_names(scope["query_string"])
    try:
        check("GET", PATH, names, None)
        _check_key(scope)
    except ProblemError as error:
        await socket.reject(problem_answer(error.problem, error.headers))
        return None
    await socket.accept()
    args = _first_values(scope["query_string"])
    token = args.get("token", "")
    try:
        await learn_kid(gw.key_ring, token)
        granted = read_token(gw.secret, token, wall_ms())
    except InvalidToken as exc:
        await socket.close(CloseCode.UNAUTHORIZED, str(exc))
        return None
    user_id = granted.user_id
    wait = await gw.limits.take(user_id)
    if wait > 0:
        await socket.close(CloseCode.RATE_LIMITED, f"over the request rate: reconnect in {retry_after(wait)} s")
        return None
    last_id = args.get("last_id")
    if last_id is not None and not is_notification_id(last_id):
        await socket.close(CloseCode.PROTOCOL_ERROR, "last_id is not a notification id")
        return None
    if last_id is not None and await belongs_to_another_user(gw.logstore, user_id, last_id):
        await socket.close(CloseCode.PROTOCOL_ERROR, f"last_id: {NOT_THIS_USERS}")
        return None
    return Subscriber(user_id, token, granted.expires_ms), last_id


def _first_values(query_string: bytes) -> dict[str, str]:
    """Each query parameter's first value (as Quart's `args.get`)."""
    values: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        values.setdefault(name, value)
    return values


async def _serve_session(gw: Gateway, socket: Socket, who: Subscriber, last_id: str | None) -> None:
    """Hold live frames until the client's first frame (a sync replays before them), or resume at once from ?last_id=."""
    session = Session(who.user_id, gw.session_queue, hold=True, token_id=token_id(who.token))
    try:
        async with registered(gw, session, "websocket"):
            await _session_loop(gw, socket, session, last_id, TokenExpiry(who.expires_ms))
    except MailboxClosed:
        await socket.close(CloseCode.SHUTTING_DOWN, _SHUTTING_DOWN)
    except TooManySessions:
        await socket.close(CloseCode.TOO_MANY_SESSIONS, "too many sessions for this user or token; reconnect later")


async def _session_loop(gw: Gateway, socket: Socket, session: Session, last_id: str | None, expiry: TokenExpiry) -> None:
    """Send what is queued, then wait for the client (or a wake-up); until the session closes or the client leaves."""
    allowed_silence = 3 * gw.heartbeat_s  # a client pings every heartbeat_s: three missed close the session
    last_seen = trio.current_time()
    if last_id is not None:
        await _sync(gw, socket, session, last_id)
    while True:
        await _flush(socket, session)
        if session.closed:
            await socket.close(session.close_code or 1000, session.close_reason)
            return
        message = None
        with session.interruptible(min(last_seen + allowed_silence, expiry.deadline), socket.nudge):
            message = await socket.receive()
        if message is None or message is WAKE:  # a frame queued, the session closed, or a deadline
            if trio.current_time() >= last_seen + allowed_silence:
                session.close(CloseCode.HEARTBEAT_MISSED, "3 heartbeats missed")
            elif trio.current_time() >= expiry.deadline and expiry.expired():
                session.close(CloseCode.TOKEN_EXPIRED, TOKEN_EXPIRED)
            continue
        if message["type"] != "websocket.receive":  # websocket.disconnect: the client left (or sent too much: 1009)
            socket.closed = True
            return
        last_seen = trio.current_time()
        await _on_client_frame(gw, socket, session, message.get("text") or message.get("bytes") or b"")


async def _on_client_frame(gw: Gateway, socket: Socket, session: Session, raw: str | bytes) -> None:
    try:
        frame = client_frame_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        await _release(socket, session)
        await _send_own(socket, session, frame_encoder.encode(ErrorFrame(f"bad frame: {exc}")))
        return
    if isinstance(frame, Sync):
        # a sync reads the inbox: it counts against the user's rate, and resumes only from the user's own ids
        if await gw.limits.take(session.user_id) > 0:
            session.close(CloseCode.RATE_LIMITED, "over the request rate: reconnect after a pause")
        elif frame.last_id is not None and await belongs_to_another_user(gw.logstore, session.user_id, frame.last_id):
            session.close(CloseCode.PROTOCOL_ERROR, f"sync: last_id: {NOT_THIS_USERS}")
        else:
            await _sync(gw, socket, session, frame.last_id)
        return
    await _release(socket, session)
    if isinstance(frame, Ping):
        await _send_own(socket, session, _PONG)
    elif isinstance(frame, Ack):
        await _ack(gw, socket, session, frame.id)


async def _flush(socket: Socket, session: Session) -> None:
    """Send the queued live frames (more may be queued meanwhile: sent too)."""
    while (item := session.next_nowait()) is not None:
        await socket.send(item.frame)


async def _send_own(socket: Socket, session: Session, frame: bytes) -> bool:
    """Send a frame of the session's own (pong, error, replay, synced), unless the session is closed; whether it went."""
    if session.closed:
        return False
    await socket.send(frame)
    return True


async def _release(socket: Socket, session: Session) -> int:
    """Let the held frames through, in order, and go live; how many were sent."""
    count = 0
    while (item := session.take_held()) is not None:
        if await _send_own(socket, session, item.frame):
            count += 1
    return count


async def _sync(gw: Gateway, socket: Socket, session: Session, last_id: str | None) -> None:
    """Replay what the client missed after `last_id` (everything retained when None), then `synced` with the count sent."""
    if last_id is not None and not is_notification_id(last_id):
        await _release(socket, session)
        await _send_own(socket, session, frame_encoder.encode(ErrorFrame("sync: last_id is not a notification id")))
        return
    session.hold()  # live frames wait from here on; those queued before go first
    await _flush(socket, session)
    count = 0
    replay = Replay(gw.logstore, served(gw.registry, "registry mailbox"), session, last_id)
    while page := await replay.next_page():
        for item in page:
            if await _send_own(socket, session, item.frame):
                count += 1
    count += await _release(socket, session)
    await _send_own(socket, session, frame_encoder.encode(Synced(count)))


async def _ack(gw: Gateway, socket: Socket, session: Session, notification_id: str) -> None:
    """RecordEvents an ack of a frame this session sent (once); an error frame for any other id."""
    if not session.was_sent(notification_id):
        await _send_own(socket, session, frame_encoder.encode(ErrorFrame(f"ack of {notification_id}: not sent on this session")))
        return
    if session.first_ack(notification_id):  # the first ack of it on this session (a second one records nothing)
        record = RecordEvents((delivered_event(session, notification_id, "acknowledged by the client"),))
        if not gw.recorder.offer(record):  # room in the Recorder's mailbox: no turn of the scheduler per ack
            await gw.recorder.send(record)
