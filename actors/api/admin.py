"""Operators: circuit state per channel, and the dead-letter queue."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from quart import Blueprint, Response, request

from protocol.api import AttemptError, CircuitView, DeadLetterPage, DeadLetterView, DlqResult, DlqSelection
from protocol.channels import Channel
from protocol.ids import is_notification_id
from protocol.messages import decode_delivery
from protocol.problems import FieldError, Problem
from reactor.clock import iso, wall_ms
from reactor.ports import DeadLetter, DlqFilter

from ..provider import Provider
from ..services.gate import ResilienceGate
from .errors import ProblemError, authorize, bad_param, decode_body, integer_param, json_response, limit_param, read_body, time_param

_selection_decoder = msgspec.json.Decoder(DlqSelection)


def blueprint(gw: Any) -> Blueprint:
    bp = Blueprint("admin", __name__)

    @bp.get("/v1/admin/circuits")
    async def get_circuits() -> Response:
        await authorize(gw, "admin")
        return json_response({"circuits": [await _circuit_view(c, p) for c, p in gw.providers.items()]})

    @bp.get("/v1/admin/dlq")
    async def get_dlq() -> Response:
        await authorize(gw, "admin")
        args = request.args
        channel = args.get("channel")
        if channel is not None and channel not in {c.value for c in Channel}:
            raise bad_param("channel", f"one of {', '.join(c.value for c in Channel)}")
        cursor = integer_param("cursor", args.get("cursor"), 0, 2**63 - 1, "invalid cursor") or 0
        limit = limit_param(args.get("limit"))
        selection = DlqFilter(channel=channel, before_ms=time_param("before", args.get("before")))
        entries, next_id = await gw.dead_letters.list(selection, cursor, limit)
        total = await gw.dead_letters.store.dead_letter_count(channel)  # the channel's whole queue, `before` or not
        page = DeadLetterPage([_dead_letter_view(e) for e in entries], None if next_id is None else str(next_id), total)
        return json_response(page)

    async def read_selection() -> DlqFilter:
        body = await read_body(gw)
        return selection_of(decode_body(_selection_decoder, body or b"{}"))

    @bp.post("/v1/admin/dlq/replay")
    async def replay_dlq() -> Response:
        await authorize(gw, "admin")
        return json_response(DlqResult(replayed=await gw.dead_letters.replay(await read_selection())))

    @bp.delete("/v1/admin/dlq")
    async def discard_dlq() -> Response:
        await authorize(gw, "admin")
        return json_response(DlqResult(discarded=await gw.dead_letters.discard(await read_selection())))

    return bp


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


async def _circuit_view(channel: Channel, provider: Provider) -> CircuitView:
    gate = provider.gate
    if not isinstance(gate, ResilienceGate):
        return CircuitView(channel, "none", 0, 0, 0, provider.calls, provider.suppressed, math.inf, math.inf, math.inf)
    view = await gate.view()  # the provider's shared bucket and breaker, as the State has them now
    retry_at = None
    if view.retry_in_s is not None and view.retry_in_s > 0:
        retry_at = iso(wall_ms() + int(view.retry_in_s * 1000))
    return CircuitView(
        channel=channel,
        state=view.state,
        consecutive_failures=view.consecutive_failures,
        opened=view.opened,
        rejected=view.rejected,
        calls=provider.calls,
        suppressed_duplicates=provider.suppressed,
        tokens=view.tokens,
        bucket_capacity=view.bucket_capacity,
        refill_per_s=view.refill_per_s,
        deferred=view.deferred,
        throttled=view.throttled,
        transitions=view.transitions,
        retry_at=retry_at,
    )


