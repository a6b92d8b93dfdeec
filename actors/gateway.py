"""The HTTP and WebSocket front end: a Quart-Trio app served by Hypercorn's trio worker.

Handlers validate with protocol's schemas (msgspec), talk to the actors through their
mailboxes, and answer errors as application/problem+json naming the field.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from protocol.api import (
    Attempt as AttemptView,
    AttemptError,
    CircuitView,
    DeadLetterPage,
    DeadLetterView,
    DlqResult,
    DlqSelection,
    ChannelStatus,
    HistoryItem,
    HistoryPage,
    NotificationRequest,
    NotificationStatus,
    Receipt,
    TokenRequest,
    TokenResponse,
)
from protocol.channels import Channel, Priority
from protocol.frames import Ack, CloseCode, ErrorFrame, Ping, Pong, Sync, Synced, client_frame_decoder, frame_encoder
from protocol.ids import is_notification_id, is_user_id, notification_id_ms
from protocol.lifecycle import FINAL, Status
from protocol.messages import StatusEvent
from protocol.problems import PROBLEM_CONTENT_TYPE, FieldError, Problem, invalid
from reactor.ask import ask
from reactor.clock import iso, parse_iso, wall_ms
from reactor.mailbox import Mailbox, MailboxClosed, MailboxFull
from protocol.messages import decode_delivery
from reactor.ports import DeadLetter, DlqFilter, LogStore

from .auth import InvalidToken, api_key_matches, issue_token, verify_token
from .dead_letters import DeadLetters
from .idempotency import HEADER as IDEMPOTENCY_HEADER, Idempotency
from .gate import ResilienceGate
from .provider import Provider
from .clients.web import notification_frame
from .messages import Push, Record, Register, Submit, Unregister
from .sessions import Session

log = logging.getLogger("herald.gateway")

_json = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(NotificationRequest)
_token_decoder = msgspec.json.Decoder(TokenRequest)
_selection_decoder = msgspec.json.Decoder(DlqSelection)
_PONG = frame_encoder.encode(Pong())


@dataclass
class Gateway:
    """What the front end needs from the rest of the system."""

    ingress: Mailbox[Submit]
    registry: Mailbox[Register | Unregister | Push]
    recorder: Mailbox[Record]
    logstore: LogStore
    api_key: str
    secret: bytes
    max_body_bytes: int
    heartbeat_s: float
    session_queue: int
    dead_letters: DeadLetters
    providers: dict[Channel, Provider]
    idempotency: Idempotency
    ready: bool = False
    draining: trio.Event = field(default_factory=trio.Event)
    sessions_opened: int = 0


class ProblemError(Exception):
    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.headers = headers or {}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(problem), status=problem.status, content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(value), status=status, content_type="application/json", headers=headers)


def _bad_param(name: str, message: str) -> ProblemError:
    return ProblemError(Problem("Invalid request", 400, f"{name}: {message}", errors=[FieldError(name, message)]))


def create_app(gw: Gateway) -> QuartTrio:
    app = QuartTrio("herald")
    app.config["MAX_CONTENT_LENGTH"] = gw.max_body_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    @app.errorhandler(ProblemError)
    async def _problem(error: ProblemError) -> Response:
        return problem_response(error.problem, error.headers)

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> Response:
        status = error.code or 500
        return problem_response(Problem(title=error.name, status=status, detail=error.description or ""))

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(Problem(title="Internal Server Error", status=500, detail="unexpected error; see the server log"))

    def authorize() -> None:
        if not api_key_matches(gw.api_key, request.headers.get("Authorization")):
            raise ProblemError(
                Problem("Unauthorized", 401, "an API key is required: Authorization: Bearer <key>"),
                {"WWW-Authenticate": 'Bearer realm="herald"'},
            )

    @app.before_request
    async def _gate() -> None:
        if gw.draining.is_set() and request.path.startswith("/v1/"):
            raise ProblemError(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"})

    async def read_body() -> bytes:
        length = request.content_length
        if length is not None and length > gw.max_body_bytes:
            raise ProblemError(Problem("Payload Too Large", 413, f"body over {gw.max_body_bytes} bytes"))
        body: bytes = await request.get_data(cache=False, as_text=False)
        return body

    @app.post("/v1/notifications")
    async def post_notification() -> Response:
        authorize()
        body = await read_body()
        return await gw.idempotency.run("POST /v1/notifications", request.headers.get(IDEMPOTENCY_HEADER), body, lambda: submit(body))

    async def submit(body: bytes) -> Response:
        try:
            submission = _request_decoder.decode(body)
        except msgspec.ValidationError as exc:
            return problem_response(invalid(str(exc)))
        except msgspec.DecodeError as exc:
            return problem_response(Problem("Malformed JSON", 400, str(exc), errors=[FieldError("body", str(exc))]))
        try:
            result = await ask(_nowait(gw.ingress), lambda reply: Submit(submission, reply))
        except MailboxFull:
            return problem_response(Problem("Service Unavailable", 503, "ingress is saturated; retry shortly"), {"Retry-After": "1"})
        except MailboxClosed:
            return problem_response(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"})
        if isinstance(result, Problem):
            return problem_response(result)
        assert isinstance(result, Receipt)
        return json_response(result, 202, {"Location": f"/v1/notifications/{result.notification_id}"})

    @app.get("/v1/notifications/<nid>")
    async def get_notification(nid: str) -> Response:
        authorize()
        if not is_notification_id(nid):
            raise _bad_param("notification_id", "not a notification id (26 characters, Crockford base32)")
        rows = await gw.logstore.statuses(nid)
        if not rows:
            raise ProblemError(Problem("Not Found", 404, f"no notification {nid}"))
        events = await gw.logstore.events(nid)
        channels = {}
        for row in rows:
            attempts = [AttemptView(Status(e.status), iso(e.at_ms), e.detail) for e in events if e.channel == row.channel]
            channels[row.channel] = ChannelStatus(Status(row.status), iso(row.updated_ms), attempts)
        first = rows[0]
        view = NotificationStatus(
            notification_id=nid,
            user_id=first.user_id,
            created_at=iso(first.created_ms),
            priority=Priority(first.priority),
            channels=channels,
            final=all(c.status in FINAL for c in channels.values()),
        )
        return json_response(view)

    @app.get("/v1/users/<user_id>/notifications")
    async def get_history(user_id: str) -> Response:
        authorize()
        if not is_user_id(user_id):
            raise _bad_param("user_id", "1-128 characters of A-Z a-z 0-9 . _ : @ -")
        args = request.args
        unknown = set(args) - {"channel", "since", "until", "cursor", "limit"}
        if unknown:
            raise _bad_param(sorted(unknown)[0], "unknown query parameter")
        channel = args.get("channel")
        if channel is not None and channel not in {c.value for c in Channel}:
            raise _bad_param("channel", f"one of {', '.join(c.value for c in Channel)}")
        since_ms = _time_param("since", args.get("since"))
        until_ms = _time_param("until", args.get("until"))
        limit = _limit_param(args.get("limit"))
        try:
            rows, cursor = await gw.logstore.history(
                user_id, channel=channel, since_ms=since_ms, until_ms=until_ms, cursor=args.get("cursor"), limit=limit
            )
        except ValueError as exc:
            raise _bad_param("cursor", str(exc)) from None
        items = [
            HistoryItem(r.notification_id, Channel(r.channel), Status(r.status), iso(r.created_ms), iso(r.updated_ms), r.detail)
            for r in rows
        ]
        return json_response(HistoryPage(items, cursor))

    @app.post("/v1/users/<user_id>/tokens")
    async def post_token(user_id: str) -> Response:
        authorize()
        if not is_user_id(user_id):
            raise _bad_param("user_id", "1-128 characters of A-Z a-z 0-9 . _ : @ -")
        body = await read_body()
        try:
            wanted = _token_decoder.decode(body) if body.strip() else TokenRequest()
        except msgspec.ValidationError as exc:
            return problem_response(invalid(str(exc)))
        except msgspec.DecodeError as exc:
            return problem_response(Problem("Malformed JSON", 400, str(exc), errors=[FieldError("body", str(exc))]))
        expires = wall_ms() + wanted.ttl_s * 1000
        return json_response(TokenResponse(issue_token(gw.secret, user_id, expires), iso(expires)), 201)

    @app.get("/v1/admin/circuits")
    async def get_circuits() -> Response:
        authorize()
        return json_response({"circuits": [_circuit_view(c, p) for c, p in gw.providers.items()]})

    @app.get("/v1/admin/dlq")
    async def get_dlq() -> Response:
        authorize()
        args = request.args
        unknown = set(args) - {"channel", "cursor", "limit"}
        if unknown:
            raise _bad_param(sorted(unknown)[0], "unknown query parameter")
        channel = args.get("channel")
        if channel is not None and channel not in {c.value for c in Channel}:
            raise _bad_param("channel", f"one of {', '.join(c.value for c in Channel)}")
        cursor = args.get("cursor", "0")
        if not cursor.isdigit():
            raise _bad_param("cursor", "invalid cursor")
        limit = _limit_param(args.get("limit"))
        selection = DlqFilter(channel=channel)
        entries, next_id = await gw.dead_letters.list(selection, int(cursor), limit)
        total = await gw.dead_letters.store.dead_letter_count(channel)
        page = DeadLetterPage([_dead_letter_view(e) for e in entries], None if next_id is None else str(next_id), total)
        return json_response(page)

    async def read_selection() -> DlqFilter:
        body = await read_body()
        try:
            wanted = _selection_decoder.decode(body or b"{}")
        except msgspec.ValidationError as exc:
            raise ProblemError(invalid(str(exc))) from None
        except msgspec.DecodeError as exc:
            raise ProblemError(Problem("Malformed JSON", 400, str(exc), errors=[FieldError("body", str(exc))])) from None
        criteria = (wanted.ids, wanted.channel, wanted.notification_id, wanted.before)
        if wanted.all == any(c is not None for c in criteria):
            message = "give ids, a filter (channel, notification_id, before), or all: true; not both, not neither"
            raise ProblemError(Problem("Unprocessable selection", 422, message, errors=[FieldError("all", message)]))
        before_ms = _time_param("before", wanted.before)
        return DlqFilter(
            ids=tuple(wanted.ids) if wanted.ids else None,
            channel=wanted.channel.value if wanted.channel else None,
            notification_id=wanted.notification_id,
            before_ms=before_ms,
        )

    @app.post("/v1/admin/dlq/replay")
    async def replay_dlq() -> Response:
        authorize()
        return json_response(DlqResult(replayed=await gw.dead_letters.replay(await read_selection())))

    @app.delete("/v1/admin/dlq")
    async def discard_dlq() -> Response:
        authorize()
        return json_response(DlqResult(discarded=await gw.dead_letters.discard(await read_selection())))

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if gw.ready and not gw.draining.is_set():
            return json_response({"status": "ready"})
        return problem_response(Problem("Service Unavailable", 503, "starting" if not gw.ready else "shutting down"))

    @app.websocket("/v1/ws")
    async def ws() -> None:
        await websocket.accept()
        try:
            user_id = verify_token(gw.secret, websocket.args.get("token", ""), wall_ms())
        except InvalidToken as exc:
            await websocket.close(CloseCode.UNAUTHORIZED, str(exc))
            return
        await _serve_session(gw, user_id)

    return app


def _time_param(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value) if value.isdigit() else parse_iso(value)
    except ValueError:
        raise _bad_param(name, "an RFC 3339 timestamp or milliseconds since the epoch") from None


def _limit_param(value: str | None, default: int = 50) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 200:
        raise _bad_param("limit", "an integer from 1 to 200")
    return int(value)


def _dead_letter_view(entry: DeadLetter) -> DeadLetterView:
    history = [AttemptError(a.attempt, iso(a.at_ms), a.error) for a in decode_delivery(entry.record).history]
    return DeadLetterView(
        entry.id, Channel(entry.channel), entry.notification_id, entry.user_id, entry.error, entry.attempts,
        iso(entry.created_ms), iso(entry.dead_ms), history,
    )


def _circuit_view(channel: Channel, provider: Provider) -> CircuitView:
    gate = provider.gate
    if not isinstance(gate, ResilienceGate):
        return CircuitView(channel, "none", 0, 0, 0, provider.calls, provider.suppressed, math.inf, math.inf, math.inf)
    now = trio.current_time()
    stats = gate.breaker.statistics()
    retry_at = None
    if stats.open_until is not None and stats.open_until > now:
        retry_at = iso(wall_ms() + int((stats.open_until - now) * 1000))
    return CircuitView(
        channel=channel,
        state=gate.breaker.state_at(now).value,
        consecutive_failures=stats.consecutive_failures,
        opened=stats.opened_count,
        rejected=stats.rejected,
        calls=provider.calls,
        suppressed_duplicates=provider.suppressed,
        tokens=round(gate.bucket.available(now), 3),
        bucket_capacity=gate.limits.capacity,
        refill_per_s=gate.limits.refill_per_s,
        retry_at=retry_at,
    )


def _nowait(mailbox: Mailbox[Any]) -> Any:
    async def send(message: Any) -> None:
        mailbox.send_nowait(message)

    return send


async def _serve_session(gw: Gateway, user_id: str) -> None:
    session = Session(user_id, gw.session_queue)
    await gw.registry.send(Register(session))
    gw.sessions_opened += 1
    last_seen = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                async for frame in session.outbound:
                    await websocket.send(frame.decode())
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
            while True:
                raw = await websocket.receive()
                last_seen = trio.current_time()
                try:
                    frame = client_frame_decoder.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    session.offer(None, frame_encoder.encode(ErrorFrame(f"bad frame: {exc}")))
                    continue
                if isinstance(frame, Ping):
                    session.offer(None, _PONG)
                elif isinstance(frame, Ack):
                    await _ack(gw, session, frame.id)
                elif isinstance(frame, Sync):
                    await _sync(gw, session, frame.last_id)
    finally:
        session.close(1000, "")
        with trio.CancelScope(shield=True):
            try:
                await gw.registry.send(Unregister(session))
            except MailboxClosed:
                pass


async def _ack(gw: Gateway, session: Session, notification_id: str) -> None:
    if not session.was_sent(notification_id):
        session.offer(None, frame_encoder.encode(ErrorFrame(f"ack of {notification_id}: not sent on this session")))
        return
    at = wall_ms()
    event = StatusEvent(
        notification_id, session.user_id, Channel.WEB, Status.DELIVERED, at, detail="acknowledged by the client",
        created_ms=notification_id_ms(notification_id),
    )
    await gw.recorder.send(Record((event,)))


async def _sync(gw: Gateway, session: Session, last_id: str | None) -> None:
    """Replay what the user missed after `last_id`, then say so; live frames keep flowing meanwhile."""
    if last_id is not None and not is_notification_id(last_id):
        session.offer(None, frame_encoder.encode(ErrorFrame("sync: last_id is not a notification id")))
        return
    count = 0
    after = last_id
    while True:
        entries = await gw.logstore.inbox_after(session.user_id, after, 200)
        for entry in entries:
            if await session.replay(entry.notification_id, notification_frame(entry)):
                count += 1
        if len(entries) < 200:
            break
        after = entries[-1].notification_id
    session.offer(None, frame_encoder.encode(Synced(count)))


def hypercorn_config(host: str, port: int, grace_s: float) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    config.backlog = 1024
    return config


class FrontEnd:
    """The Hypercorn server as a supervised child; stop() makes it drain and return."""

    def __init__(self, gw: Gateway, host: str, port: int, grace_s: float) -> None:
        self.gw = gw
        self.app = create_app(gw)
        self.config = hypercorn_config(host, port, grace_s)
        self.binds: list[str] = []

    def stop(self) -> None:
        self.gw.draining.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self.gw.draining.is_set():
            task_status.started()
            return

        class _Status:
            def started(inner, binds: list[str]) -> None:  # noqa: N805
                self.binds = binds
                self.gw.ready = True
                task_status.started(binds)

        await serve(self.app, self.config, shutdown_trigger=self.gw.draining.wait, task_status=_Status())

    def url(self) -> str:
        return self.binds[0] if self.binds else ""


def new_secret() -> str:
    return secrets.token_hex(32)
