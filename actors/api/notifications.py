"""Notifications: submit, status, history; subscriber tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from quart import Blueprint, Response, request

from protocol.api import (
    MAX_BATCH_ITEMS,
    Attempt as AttemptView,
    BatchItem,
    BatchProblem,
    BatchReceipt,
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
from protocol.problems import FieldError, Problem
from protocol.topics import TOPIC_SEND_PREFIX, ChannelCounts, TopicSendStatus
from reactor.ask import ask
from reactor.clock import iso, wall_ms
from reactor.mailbox import Mailbox, MailboxClosed, MailboxFull
from reactor.ports import EventRow, FanoutJob, InvalidCursor, StatusRow

from ..domain.api_keys import Caller
from ..domain.tokens import issue_token
from ..fanout import decode_counts
from ..messages import IngressMessage, KeyedIds, Submit, SubmitBatch
from ..services.cancellation import cancel_notification
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
    over_rate_limit,
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
BATCH_PATH = "/v1/notifications/batch"


# `items` decodes into MAX_BATCH_ITEMS + 1 raw slots of an array-like struct, not a list: msgspec builds a
# list whole before its length can be checked (a 4 MiB body of `1,1,1,...` would be two million objects,
# ~110 MB), while it skips the elements past a struct's last slot without building them.
_BatchSlots = msgspec.defstruct(
    "_BatchSlots", [(f"i{n}", msgspec.Raw | msgspec.UnsetType, msgspec.UNSET) for n in range(MAX_BATCH_ITEMS + 1)],
    array_like=True, frozen=True,
)
# protocol.api.BatchRequest with each item left as its JSON text, to be decoded (and refused) on its own
_BatchEnvelope = msgspec.defstruct("_BatchEnvelope", [("items", _BatchSlots)], forbid_unknown_fields=True, frozen=True)
_batch_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_BatchEnvelope)


def batch_items(body: bytes) -> list[msgspec.Raw]:
    """The items of a batch body, each as its JSON text; a ProblemError for the body or for their count (`items`)."""
    slots = msgspec.structs.astuple(decode_body(_batch_decoder, body).items)
    raws: list[msgspec.Raw] = [raw for raw in slots if raw is not msgspec.UNSET]  # set slots come first
    if not 1 <= len(raws) <= MAX_BATCH_ITEMS:
        message = f"1 to {MAX_BATCH_ITEMS} notifications per batch, got {'more' if raws else 'none'}"
        raise ProblemError(Problem("Unprocessable batch", 422, f"items: {message}", errors=[FieldError("items", message)]))
    return raws


DECODE_SLICE = 64  # batch items decoded (and answered) between two checkpoints (issue 10 item 6)
_DETAIL_ERRORS = 10  # a 422 batch problem's detail names the first few fields; `errors` has them all
_token_decoder = msgspec.json.Decoder(TokenRequest)


def _nowait(mailbox: Mailbox[IngressMessage]) -> Callable[[IngressMessage], Awaitable[None]]:
    async def send(message: IngressMessage) -> None:
        mailbox.send_nowait(message)

    return send


async def submit_notification(gw: Gateway, caller: Caller, body: bytes, idempotency_key: str | None) -> Answer:
    """POST /v1/notifications once authorized and read: the core both the Quart route and the ASGI fast path run.

    Idempotency keys are the caller's own: two API keys never see each other's answers."""
    scope = f"{caller.key_id}:POST /v1/notifications"
    return await served(gw.idempotency, "idempotency records").run(scope, idempotency_key, body, lambda ids: _submit(gw, body, ids))


async def _submit(gw: Gateway, body: bytes, ids: KeyedIds | None) -> Answer:
    try:
        submission = decode_body(_request_decoder, body)
    except ProblemError as error:
        return problem_answer(error.problem)  # returned, not raised: the idempotency record keeps it
    try:
        result: Receipt | Problem = await ask(_nowait(served(gw.ingress, "ingress mailbox")), lambda reply: Submit(submission, reply, ids))
    except MailboxFull:
        return problem_answer(Problem("Service Unavailable", 503, "ingress is saturated; retry shortly"), {"Retry-After": "1"})
    except MailboxClosed:
        return problem_answer(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"})
    if isinstance(result, Problem):
        return problem_answer(result)
    _note_accepted(gw, result.notification_id, submission)
    return json_answer(result, 202, {"Location": f"/v1/notifications/{result.notification_id}"})


def _note_accepted(gw: Gateway, notification_id: str, submission: NotificationRequest) -> None:
    """The operator console's feed (console_feed.py): the latest notifications and the count accepted per channel."""
    who = submission.user_id or f"topic:{submission.topic}"
    gw.console.note_accepted(notification_id, who, submission.channels, wall_ms())


async def _statuses_and_events(gw: Gateway, nid: str) -> tuple[list[StatusRow], list[EventRow]]:
    """A notification's statuses, then its timeline: read in that order, so the timeline holds at least the step
    each status names (a write landing between the two reads adds a later step, never hides the status's own)."""
    rows = await gw.logstore.statuses(nid)
    return rows, await gw.logstore.events(nid)


async def submit_batch(gw: Gateway, caller: Caller, body: bytes, idempotency_key: str | None) -> Answer:
    """POST /v1/notifications/batch once authorized and read (the body within max_batch_body_bytes).

    A batch of N items costs N tokens of the key's rate limit (the request's own, taken by
    check_access, and N - 1 more here), every call, a replay too: charged before the
    Idempotency-Key's record is looked up, which reads the whole body. One key covers the
    whole batch. What the body or the count of items gets wrong is answered before that too."""
    try:
        raws = batch_items(body)
    except ProblemError as error:
        return problem_answer(error.problem)
    if len(raws) > 1:
        refused = await over_rate_limit(gw, caller, len(raws) - 1, "items")
        if refused is not None:
            return problem_answer(refused.problem, refused.headers)
    scope = f"{caller.key_id}:POST {BATCH_PATH}"
    return await served(gw.idempotency, "idempotency records").run(scope, idempotency_key, body, lambda ids: _submit_batch(gw, raws, ids))


def _item_problem(index: int, problem: Problem) -> BatchItem:
    """The problem of item `index`, its fields named `items[index].<field>` (the item itself: `items[index]`)."""
    where = f"items[{index}]"
    errors = [FieldError(where if e.field in ("", "body") else f"{where}.{e.field}", e.message) for e in problem.errors]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) if errors else f"{where}: {problem.detail}"
    return BatchItem(problem=msgspec.structs.replace(problem, detail=detail, errors=errors))


async def _submit_batch(gw: Gateway, raws: list[msgspec.Raw], ids: KeyedIds | None) -> Answer:
    results: list[BatchItem | None] = [None] * len(raws)
    requests: list[NotificationRequest] = []
    positions: list[int] = []
    for index, raw in enumerate(raws):
        if index and not index % DECODE_SLICE:  # decoded in slices: a 1,000-item batch does not hold the loop for all
            await trio.lowlevel.checkpoint()
        if len(raw) > gw.max_body_bytes:  # each item within the single route's limit
            detail = f"an item over {gw.max_body_bytes} bytes (max_body_bytes)"
            results[index] = _item_problem(index, Problem("Payload Too Large", 413, detail, errors=[FieldError("", detail)]))
            continue
        try:
            requests.append(decode_body(_request_decoder, raw))
        except ProblemError as error:
            results[index] = _item_problem(index, error.problem)
            continue
        positions.append(index)
    if requests:
        batch = tuple(requests)
        try:
            answers: list[Receipt | Problem] = await ask(
                _nowait(served(gw.ingress, "ingress mailbox")), lambda reply: SubmitBatch(batch, reply, ids)
            )
        except MailboxFull:
            return problem_answer(Problem("Service Unavailable", 503, "ingress is saturated; retry shortly"), {"Retry-After": "1"})
        except MailboxClosed:
            return problem_answer(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"})
        noted: list[tuple[str, str, list[Channel]]] = []  # for the console's feed, noted once for the batch
        for n, (index, submitted, answer) in enumerate(zip(positions, requests, answers, strict=True)):
            if n and not n % DECODE_SLICE:
                await trio.lowlevel.checkpoint()
            if isinstance(answer, Receipt):
                noted.append((answer.notification_id, submitted.user_id or f"topic:{submitted.topic}", submitted.channels))
                results[index] = BatchItem(answer.notification_id)
            else:
                results[index] = _item_problem(index, answer)
        gw.console.note_accepted_many(noted, wall_ms())
    items = [r for r in results if r is not None]
    assert len(items) == len(raws)
    accepted = sum(1 for item in items if item.notification_id is not None)
    if accepted:
        return json_answer(BatchReceipt(accepted, len(items) - accepted, items), 202)
    errors = [e for item in items if item.problem is not None for e in item.problem.errors]
    shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:_DETAIL_ERRORS])
    more = f"; and {len(errors) - _DETAIL_ERRORS} more (see errors)" if len(errors) > _DETAIL_ERRORS else ""
    detail = f"none of the {len(items)} items was accepted: {shown}{more}"
    return problem_answer(BatchProblem("Unprocessable batch", 422, detail, errors=errors, rejected=len(items), items=items))


_request_of_job = msgspec.json.Decoder(NotificationRequest)


def topic_send_status(job: FanoutJob) -> TopicSendStatus:
    """A topic send's fan-out progress, from its job in the Store."""
    request = _request_of_job.decode(job.request)
    done = job.done_ms is not None
    counts = decode_counts(job.counts)
    return TopicSendStatus(
        notification_id=job.id, topic=job.topic, created_at=iso(job.created_ms), priority=request.priority.value,
        state="done" if done else "expanding" if job.expanded else "pending",
        subscribers=job.expanded if done else max(job.total, job.expanded), expanded=job.expanded,
        channels={c.value: counts.get(c.value, ChannelCounts()) for c in request.channels}, final=done,
        finished_at=iso(job.done_ms) if job.done_ms is not None else None,
    )


def blueprint(gw: Gateway) -> Blueprint:
    bp = Blueprint("notifications", __name__)

    @bp.post("/v1/notifications")
    async def post_notification() -> Response:
        caller = await authorize(gw, "send")
        body = await read_body(gw)
        return to_response(await submit_notification(gw, caller, body, request.headers.get(IDEMPOTENCY_HEADER)))

    @bp.post(BATCH_PATH)
    async def post_batch() -> Response:
        # The front end serves this route on the ASGI fast path (fast_path.py), which reads up to
        # max_batch_body_bytes; this Quart route (an app not wrapped by it) reads what Quart's limit allows.
        caller = await authorize(gw, "send")
        body = await read_body(gw)
        return to_response(await submit_batch(gw, caller, body, request.headers.get(IDEMPOTENCY_HEADER)))

    @bp.get("/v1/notifications/<notification:nid>")
    async def get_notification(nid: str) -> Response:
        await authorize(gw, "read")
        if not is_notification_id(nid):
            raise bad_param("notification_id", "not a notification id (26 characters, Crockford base32)")
        rows, events = await _statuses_and_events(gw, nid)
        if not rows:
            job = await gw.store.fanout(nid) if gw.store is not None else None
            if job is None:
                raise ProblemError(Problem("Not Found", 404, f"no notification {nid}"))
            return json_response(topic_send_status(job))
        channels = {}
        for row in rows:
            attempts = [AttemptView(Status(e.status), iso(e.at_ms), e.detail) for e in events if e.channel == row.channel]
            status = Status(row.status)
            priority = Priority(row.priority)
            channels[row.channel] = ChannelStatus(
                status, iso(row.updated_ms), attempts, is_final(Channel(row.channel), status), priority, priority.lane,
            )
        first = rows[0]
        view = NotificationStatus(
            notification_id=nid,
            user_id=first.user_id,
            created_at=iso(first.created_ms),
            priority=Priority(first.priority),
            channels=channels,
            final=all(c.final for c in channels.values()),
            template=next((r.template for r in rows if r.template), None),
            topic_send=next((e.detail[len(TOPIC_SEND_PREFIX):] for e in events
                             if e.status == Status.ACCEPTED.value and e.detail.startswith(TOPIC_SEND_PREFIX)), None),
        )
        return json_response(view)

    @bp.delete("/v1/notifications/<notification:nid>")
    async def delete_notification(nid: str) -> Response:
        """Cancel what is not yet gone of a notification, per channel (actors/services/cancellation.py)."""
        await authorize(gw, "send")
        if not is_notification_id(nid):
            raise bad_param("notification_id", "not a notification id (26 characters, Crockford base32)")
        store = served(gw.store, "the store")
        result = await cancel_notification(nid, store, gw.logstore, gw.recorder)
        if result is None:
            if await store.fanout(nid) is not None:
                raise ProblemError(Problem("Conflict", 409, f"{nid} is a topic send: cancel its subscribers' copies by their ids"))
            raise ProblemError(Problem("Not Found", 404, f"no notification {nid}"))
        return json_response(result)

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
