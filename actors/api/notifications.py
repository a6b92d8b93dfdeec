"""Notifications: submit, status, history; subscriber tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec
import trio
from quart import Blueprint, Response, request

from protocol.api import (
    Attempt as AttemptView,
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
from protocol.ids import USER_ID_RULE, is_notification_id, is_user_id
from protocol.lifecycle import Status, is_final
from protocol.problems import Problem
from reactor.ask import ask
from reactor.clock import iso, wall_ms
from reactor.mailbox import Mailbox, MailboxClosed, MailboxFull
from reactor.ports import EventRow, InvalidCursor, StatusRow

from ..domain.api_keys import Caller
from ..domain.tokens import issue_token
from ..messages import Submit
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .errors import (
    Answer,
    ProblemError,
    authorize,
    bad_param,
    decode_body,
    json_answer,
    json_response,
    limit_param,
    problem_answer,
    read_body,
    served,
    time_param,
    to_response,
)
from .subscriber import throttle_issue

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

_request_decoder = msgspec.json.Decoder(NotificationRequest)
_token_decoder = msgspec.json.Decoder(TokenRequest)


M = TypeVar("M")


def _nowait(mailbox: Mailbox[M]) -> Callable[[M], Awaitable[None]]:
    async def send(message: M) -> None:
        mailbox.send_nowait(message)

    return send


async def submit_notification(gw: Gateway, caller: Caller, body: bytes, idempotency_key: str | None) -> Answer:
    """POST /v1/notifications once authorized and read: the core both the Quart route and the ASGI fast path run.

    Idempotency keys are the caller's own: two API keys never see each other's answers."""
    scope = f"{caller.key_id}:POST /v1/notifications"
    return await served(gw.idempotency, "idempotency records").run(scope, idempotency_key, body, lambda: _submit(gw, body))


async def _submit(gw: Gateway, body: bytes) -> Answer:
    try:
        submission = decode_body(_request_decoder, body)
    except ProblemError as error:
        return problem_answer(error.problem)  # returned, not raised: the idempotency record keeps it
    try:
        result: Receipt | Problem = await ask(_nowait(served(gw.ingress, "ingress mailbox")), lambda reply: Submit(submission, reply))
    except MailboxFull:
        return problem_answer(Problem("Service Unavailable", 503, "ingress is saturated; retry shortly"), {"Retry-After": "1"})
    except MailboxClosed:
        return problem_answer(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"})
    if isinstance(result, Problem):
        return problem_answer(result)
    return json_answer(result, 202, {"Location": f"/v1/notifications/{result.notification_id}"})


async def _statuses_and_events(gw: Gateway, nid: str) -> tuple[list[StatusRow], list[EventRow]]:
    """A notification's statuses and timeline, read at once (two read connections): one wait for the
    event loop, not two, when it is busy with the delivery pipeline."""
    events: list[EventRow] = []

    async def read_events() -> None:
        events.extend(await gw.logstore.events(nid))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_events)
        rows = await gw.logstore.statuses(nid)
    return rows, events


def blueprint(gw: Gateway) -> Blueprint:
    bp = Blueprint("notifications", __name__)

    @bp.post("/v1/notifications")
    async def post_notification() -> Response:
        caller = await authorize(gw, "send")
        body = await read_body(gw)
        return to_response(await submit_notification(gw, caller, body, request.headers.get(IDEMPOTENCY_HEADER)))

    @bp.get("/v1/notifications/<nid>")
    async def get_notification(nid: str) -> Response:
        await authorize(gw, "read")
        if not is_notification_id(nid):
            raise bad_param("notification_id", "not a notification id (26 characters, Crockford base32)")
        rows, events = await _statuses_and_events(gw, nid)
        if not rows:
            raise ProblemError(Problem("Not Found", 404, f"no notification {nid}"))
        channels = {}
        for row in rows:
            attempts = [AttemptView(Status(e.status), iso(e.at_ms), e.detail) for e in events if e.channel == row.channel]
            status = Status(row.status)
            channels[row.channel] = ChannelStatus(status, iso(row.updated_ms), attempts, is_final(Channel(row.channel), status))
        first = rows[0]
        view = NotificationStatus(
            notification_id=nid,
            user_id=first.user_id,
            created_at=iso(first.created_ms),
            priority=Priority(first.priority),
            channels=channels,
            final=all(c.final for c in channels.values()),
            template=next((r.template for r in rows if r.template), None),
        )
        return json_response(view)

    @bp.get("/v1/users/<user_id>/notifications")
    async def get_history(user_id: str) -> Response:
        await authorize(gw, "read")
        if not is_user_id(user_id):
            raise bad_param("user_id", USER_ID_RULE)
        args = request.args
        channel = args.get("channel")
        if channel is not None and channel not in {c.value for c in Channel}:
            raise bad_param("channel", f"one of {', '.join(c.value for c in Channel)}")
        since_ms = time_param("since", args.get("since"))
        until_ms = time_param("until", args.get("until"))
        limit = limit_param(args.get("limit"))
        try:
            rows, cursor = await gw.logstore.history(
                user_id, channel=channel, since_ms=since_ms, until_ms=until_ms, cursor=args.get("cursor"), limit=limit
            )
        except InvalidCursor as exc:
            raise bad_param("cursor", str(exc)) from None
        items = [
            HistoryItem(
                r.notification_id, Channel(r.channel), Status(r.status), iso(r.created_ms), iso(r.updated_ms), r.detail,
                is_final(Channel(r.channel), Status(r.status)), r.template or None,
            )
            for r in rows
        ]
        return json_response(HistoryPage(items, cursor))

    @bp.post("/v1/users/<user_id>/tokens")
    async def post_token(user_id: str) -> Response:
        caller = await authorize(gw, "read")  # a token reads the user's notifications: as much as `read`, so it needs `read`
        if not caller.bootstrap:  # tokens per key are rate limited on their own (the bootstrap key has no limit)
            await throttle_issue(gw, caller.key_id)
        if not is_user_id(user_id):
            raise bad_param("user_id", USER_ID_RULE)
        body = await read_body(gw)
        wanted = decode_body(_token_decoder, body) if body.strip() else TokenRequest()
        expires = wall_ms() + wanted.ttl_s * 1000
        # it changes the user's inbox state (read, archive) only if the minting key may `send`
        token = issue_token(gw.secret, user_id, expires, can_write="send" in caller.scopes)
        return json_response(TokenResponse(token, iso(expires)), 201)

    return bp
