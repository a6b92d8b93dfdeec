"""Operators: circuit state per channel, and the dead-letter queue with its jobs.

Everything here asks actors by message: the circuits are a `CircuitQuery` to each
Provider (gathered, each bound by the gateway's `query_timeout_s`: a Provider that does not
answer in time shows as `unavailable`, it does not hold the request); a replay or a purge
is a job the Jobs actor runs (202 with the job's id, then `GET /v1/admin/jobs/{id}`). The
listing reads the Store port.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

import msgspec
import trio
from quart import Blueprint, Response, request

from protocol.api import AttemptError, CircuitView, DeadLetterPage, DeadLetterView, DlqSelection, JobView
from protocol.channels import Channel
from protocol.ids import is_notification_id
from protocol.messages import decode_delivery
from protocol.problems import FieldError, Problem
from reactor.ask import ActorCrashed, Reply, ask
from reactor.clock import iso
from reactor.mailbox import Mailbox, MailboxClosed, MailboxFull
from reactor.ports import DeadLetter, DlqFilter

from ..jobs import KEEP_FINISHED, JobKind, JobMessage, JobsBusy, JobStatus, StartJob
from ..messages import CircuitQuery
from .errors import (
    ProblemError, authorize, bad_param, decode_body, integer_param, json_response, limit_param, read_body, served, time_param,
)

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

T = TypeVar("T")

_selection_decoder = msgspec.json.Decoder(DlqSelection)


def blueprint(gw: Gateway) -> Blueprint:
    bp = Blueprint("admin", __name__)

    @bp.get("/v1/admin/circuits")
    async def get_circuits() -> Response:
        await authorize(gw, "admin")
        return json_response({"circuits": await circuit_views(gw.circuits, gw.query_timeout_s, gw.role)})

    @bp.get("/v1/admin/dlq")
    async def get_dlq() -> Response:
        await authorize(gw, "admin")
        args = request.args
        channel = args.get("channel")
        if channel is not None and channel not in {c.value for c in Channel}:
            raise bad_param("channel", f"one of {', '.join(c.value for c in Channel)}")
        cursor = integer_param("cursor", args.get("cursor"), 0, 2**63 - 1, "invalid cursor") or 0
        limit = limit_param(args.get("limit"))
        nid = args.get("notification_id")
        if nid is not None and not is_notification_id(nid):
            raise bad_param("notification_id", "not a notification id (26 characters, Crockford base32)")
        selection = DlqFilter(channel=channel, notification_id=nid, before_ms=time_param("before", args.get("before")))
        dead_letters = served(gw.dead_letters, "dead-letter queue")
        entries, next_id = await dead_letters.list(selection, cursor, limit)
        total = await dead_letters.count(channel)  # the channel's whole queue, `before` or not
        page = DeadLetterPage([_dead_letter_view(e) for e in entries], None if next_id is None else str(next_id), total)
        return json_response(page)

    async def read_selection() -> DlqFilter:
        body = await read_body(gw)
        return selection_of(decode_body(_selection_decoder, body or b"{}"))

    @bp.post("/v1/admin/dlq/replay")
    async def replay_dlq() -> Response:
        await authorize(gw, "admin")
        return await start_job(gw, "dlq_replay", await read_selection())

    @bp.delete("/v1/admin/dlq")
    async def discard_dlq() -> Response:
        await authorize(gw, "admin")
        return await start_job(gw, "dlq_purge", await read_selection())

    @bp.get("/v1/admin/jobs/<job_id>")
    async def get_job(job_id: str) -> Response:
        await authorize(gw, "admin")
        view: JobView | None = await _ask_jobs(gw, lambda reply: JobStatus(job_id, reply))
        if view is None:
            raise ProblemError(Problem("Not Found", 404, (
                f"no job {job_id[:64]!r} on this node: jobs are kept in the memory of the node that runs them, so a restart "
                f"forgets them, as it forgets the oldest finished ones past the last {KEEP_FINISHED}; what a job did stays "
                "done (GET /v1/admin/dlq shows what is left in the queue; a replay or purge can be run again)"
            )))
        return json_response(view)

    return bp


_JOBS_RETRY_S = 5


async def _ask_jobs(gw: Gateway, make: Callable[[Reply[T]], JobMessage]) -> T:
    """Ask the Jobs actor (503 when it is not running here: stopping)."""
    try:
        with trio.fail_after(gw.query_timeout_s * 10):
            return await ask(served(gw.jobs, "jobs mailbox").send, make)
    except (MailboxClosed, MailboxFull, ActorCrashed, trio.TooSlowError) as exc:
        raise ProblemError(Problem("Service Unavailable", 503, f"the jobs actor did not answer: {exc!r}"),
                           {"Retry-After": str(_JOBS_RETRY_S)}) from None


async def start_job(gw: Gateway, kind: JobKind, selection: DlqFilter) -> Response:
    """202 with the job queued, and where to follow it."""
    try:
        view: JobView = await _ask_jobs(gw, lambda reply: StartJob(kind, selection, reply))
    except JobsBusy as busy:
        raise ProblemError(Problem("Service Unavailable", 503, f"{busy}: wait for them (GET /v1/admin/jobs/{{id}})"),
                           {"Retry-After": str(_JOBS_RETRY_S)}) from None
    return json_response(view, 202, {"Location": f"/v1/admin/jobs/{view.id}"})


def unavailable(channel: Channel, detail: str) -> CircuitView:
    """A channel whose Provider did not answer: its numbers are 0 (nothing was read), `detail` says why."""
    return CircuitView(channel, "unavailable", 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, detail=detail)


async def circuit_views(addresses: Mapping[Channel, Mailbox[CircuitQuery]], timeout_s: float, role: str) -> list[CircuitView]:
    """Every channel's circuit, its Providers asked at once, each within `timeout_s` (or shown unavailable)."""
    views: dict[Channel, CircuitView] = {}

    async def query(channel: Channel, mailbox: Mailbox[CircuitQuery]) -> None:
        with trio.move_on_after(timeout_s):
            try:
                views[channel] = await ask(mailbox.send, CircuitQuery)
            except (MailboxFull, MailboxClosed, ActorCrashed) as exc:
                views[channel] = unavailable(channel, f"provider:{channel.value} did not answer: {exc!r}")
            return
        views[channel] = unavailable(channel, f"provider:{channel.value} did not answer within {timeout_s:g} s")

    async with trio.open_nursery() as nursery:
        for channel, mailbox in addresses.items():
            nursery.start_soon(query, channel, mailbox)
    absent = f"no provider of this channel answers on this node (its role is {role}: the providers run on worker nodes)"
    return [views.get(channel) or unavailable(channel, absent) for channel in Channel]


_FILTER = ("channel", "notification_id", "before")
_ONE_OF = "give exactly one of: ids, a filter (channel, notification_id, before), or all: true"


def _unprocessable(errors: list[FieldError]) -> ProblemError:
    return ProblemError(Problem("Unprocessable selection", 422, "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors))


def selection_of(wanted: DlqSelection) -> DlqFilter:
    """The entries a replay or discard takes: exactly one of ids, a filter, or all (422 naming the fields otherwise)."""
    given = [name for name in ("ids", *_FILTER) if getattr(wanted, name) is not None] + (["all"] if wanted.all else [])
    kinds = {"filter" if name in _FILTER else name for name in given}
    if len(kinds) != 1:
        fields = given or ["ids", *_FILTER, "all"]
        message = f"{_ONE_OF}; got {', '.join(given)}" if given else f"{_ONE_OF}; got none"
        raise _unprocessable([FieldError(name, message) for name in fields])
    if wanted.notification_id is not None and not is_notification_id(wanted.notification_id):
        raise _unprocessable([FieldError("notification_id", "not a notification id (26 characters, Crockford base32)")])
    before_ms = None
    if wanted.before is not None:
        try:
            before_ms = time_param("before", wanted.before)
        except ProblemError as bad:
            raise _unprocessable(bad.problem.errors) from None
    return DlqFilter(
        ids=tuple(wanted.ids) if wanted.ids else None,
        channel=wanted.channel.value if wanted.channel else None,
        notification_id=wanted.notification_id,
        before_ms=before_ms,
    )


def _dead_letter_view(entry: DeadLetter) -> DeadLetterView:
    """An entry with its attempts counted across replays (each replay's attempts start again at 1 on the record)."""
    delivery = decode_delivery(entry.record)
    history, replay, previous = [], 0, 0
    for number, made in enumerate(delivery.history, start=1):
        if made.attempt <= previous:  # the numbering started again: a replay came in between
            replay += 1
        previous = made.attempt
        history.append(AttemptError(number, iso(made.at_ms), made.error, min(replay, delivery.replays)))
    return DeadLetterView(
        entry.id, Channel(entry.channel), entry.notification_id, entry.user_id, entry.error,
        max(entry.attempts, len(history)), iso(entry.created_ms), iso(entry.dead_ms), history, delivery.replays,
    )
