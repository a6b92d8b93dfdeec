"""Operators: circuit state per channel, and the dead-letter queue."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, request

from protocol.api import AttemptError, CircuitView, DeadLetterPage, DeadLetterView, DlqResult, DlqSelection
from protocol.channels import Channel
from protocol.messages import decode_delivery
from protocol.problems import FieldError, Problem
from reactor.clock import iso, wall_ms
from reactor.ports import DeadLetter, DlqFilter

from ..gate import ResilienceGate
from ..provider import Provider
from .errors import ProblemError, authorize, bad_param, decode_body, integer_param, json_response, limit_param, read_body, time_param

_selection_decoder = msgspec.json.Decoder(DlqSelection)


def blueprint(gw: Any) -> Blueprint:
    bp = Blueprint("admin", __name__)

    @bp.get("/v1/admin/circuits")
    async def get_circuits() -> Response:
        await authorize(gw, "admin")
        return json_response({"circuits": [_circuit_view(c, p) for c, p in gw.providers.items()]})

    @bp.get("/v1/admin/dlq")
    async def get_dlq() -> Response:
        await authorize(gw, "admin")
        args = request.args
        channel = args.get("channel")
        if channel is not None and channel not in {c.value for c in Channel}:
            raise bad_param("channel", f"one of {', '.join(c.value for c in Channel)}")
        cursor = integer_param("cursor", args.get("cursor"), 0, 2**63 - 1, "invalid cursor") or 0
        limit = limit_param(args.get("limit"))
        selection = DlqFilter(channel=channel)
        entries, next_id = await gw.dead_letters.list(selection, cursor, limit)
        total = await gw.dead_letters.store.dead_letter_count(channel)
        page = DeadLetterPage([_dead_letter_view(e) for e in entries], None if next_id is None else str(next_id), total)
        return json_response(page)

    async def read_selection() -> DlqFilter:
        body = await read_body(gw)
        wanted = decode_body(_selection_decoder, body or b"{}")
        criteria = (wanted.ids, wanted.channel, wanted.notification_id, wanted.before)
        if wanted.all == any(c is not None for c in criteria):
            message = "give ids, a filter (channel, notification_id, before), or all: true; not both, not neither"
            raise ProblemError(Problem("Unprocessable selection", 422, message, errors=[FieldError("all", message)]))
        before_ms = time_param("before", wanted.before)
        return DlqFilter(
            ids=tuple(wanted.ids) if wanted.ids else None,
            channel=wanted.channel.value if wanted.channel else None,
            notification_id=wanted.notification_id,
            before_ms=before_ms,
        )

    @bp.post("/v1/admin/dlq/replay")
    async def replay_dlq() -> Response:
        await authorize(gw, "admin")
        return json_response(DlqResult(replayed=await gw.dead_letters.replay(await read_selection())))

    @bp.delete("/v1/admin/dlq")
    async def discard_dlq() -> Response:
        await authorize(gw, "admin")
        return json_response(DlqResult(discarded=await gw.dead_letters.discard(await read_selection())))

    return bp


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
        deferred=gate.deferred,
        throttled=gate.throttled,
        transitions=dict(gate.transitions),
        retry_at=retry_at,
    )


