"""The operator console's live feed: GET /v1/admin/stream, one snapshot of the node a second as Server-Sent Events.

The console (/console, actors/web/console.js) reads it with fetch, the admin key in the
`Authorization` header (never in the URL, which proxies and browsers log and keep); an
EventSource cannot send a header, so the page parses the stream itself. Each `snapshot`
event is the JSON of `protocol.api.ConsoleSnapshot`: the counters the page turns into rates (accepted per
channel at the front end, each consumer outcome per channel), every channel's circuit
(breaker, bucket, in-flight), the breaker transitions this node saw, consumer lag per
partition, DLQ depth per channel, open sessions per transport, and the notifications
accepted last with their channels (their timelines: GET /v1/notifications/{id}).

`ConsoleFeed` is the front end's own bookkeeping (pure, no I/O): the hot path adds a
notification to a bounded ring and a count per channel, nothing more. A node holds at
most MAX_STREAMS console streams at once (429 past it); a stream ends when the node drains.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from quart import Blueprint, Response

from protocol.api import CircuitView, ConsoleAccepted, ConsoleLag, ConsoleSnapshot, ConsoleTransition
from protocol.channels import Channel
from protocol.problems import FieldError, Problem
from reactor.clock import iso, wall_ms

from .admin import circuit_views
from .errors import ProblemError, authorize

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

RECENT = 50  # notifications the feed keeps (the newest first)
TRANSITIONS = 50  # breaker transitions the feed keeps
MAX_STREAMS = 16  # console streams open at once on a node
INTERVAL_S = 1.0  # one snapshot a second


class ConsoleFeed:
    """What the console shows that nothing else keeps: accepted counts, the latest notifications, breaker transitions."""

    def __init__(self, recent: int = RECENT, transitions: int = TRANSITIONS) -> None:
        self.accepted: dict[str, int] = {c.value: 0 for c in Channel}
        self._recent: deque[tuple[str, str, list[str], int]] = deque(maxlen=recent)  # made into ConsoleAccepted when read
        self.transitions: deque[ConsoleTransition] = deque(maxlen=transitions)
        self._states: dict[str, str] = {}
        self.streams = 0

    def note_accepted(self, notification_id: str, user_id: str, channels: Iterable[Channel | str], at_ms: int) -> None:
        """A notification the front end accepted (its id, user and channels)."""
        names = [c.value if isinstance(c, Channel) else c for c in channels]
        for name in names:
            self.accepted[name] = self.accepted.get(name, 0) + 1
        self._recent.appendleft((notification_id, user_id, names, at_ms))

    def note_accepted_many(self, accepted: Sequence[tuple[str, str, Sequence[Channel]]], at_ms: int) -> None:
        """Notifications accepted together (a batch: id, user, channels each), as note_accepted of each in order would
        note them: counted per channel, and only the newest the ring keeps made into entries."""
        per_channel = Counter(channel for _, _, channels in accepted for channel in channels)
        for channel, count in per_channel.items():
            name = channel.value if isinstance(channel, Channel) else channel
            self.accepted[name] = self.accepted.get(name, 0) + count
        kept = self._recent.maxlen
        for notification_id, user_id, channels in accepted[-kept:] if kept else accepted:
            self._recent.appendleft((notification_id, user_id, [c.value if isinstance(c, Channel) else c for c in channels], at_ms))

    @property
    def recent(self) -> list[ConsoleAccepted]:
        """The latest notifications accepted, the newest first."""
        return [ConsoleAccepted(nid, user_id, names, iso(at_ms)) for nid, user_id, names, at_ms in self._recent]

    def note_states(self, circuits: Iterable[CircuitView], at_ms: int) -> None:
        """Each channel's breaker state as read now; a change since the last read is a transition."""
        for view in circuits:
            if view.state == "unavailable":
                continue  # not read: no transition to or from it
            was = self._states.get(view.channel.value)
            if was is not None and was != view.state:
                self.transitions.appendleft(ConsoleTransition(view.channel.value, was, view.state, iso(at_ms)))
            self._states[view.channel.value] = view.state


async def snapshot(gw: Gateway) -> ConsoleSnapshot:
    """The node as the console shows it now (the port-backed values read within the last second where possible)."""
    metrics = gw.metrics
    if metrics is not None:
        await metrics.fresh(INTERVAL_S / 2)
    circuits = await circuit_views(gw.circuits, gw.query_timeout_s, gw.role) if gw.circuits else []
    now = wall_ms()
    gw.console.note_states(circuits, now)
    lag = [ConsoleLag(group, topic, int(partition), int(value)) for (group, topic, partition), value in sorted(metrics.lag().items())] if metrics else []
    dlq = {channel: int(count) for (channel,), count in metrics.dlq().items()} if metrics else {}
    deliveries = {channel: dict(counts) for channel, counts in metrics.outcomes.items()} if metrics else {}
    return ConsoleSnapshot(
        iso(now), gw.role, dict(gw.console.accepted), deliveries, circuits, list(gw.console.transitions), lag, dlq,
        dict(gw.sessions.open), gw.console.recent,
    )


_encoder = msgspec.json.Encoder()


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event (the JSON on one `data:` line)."""
    return f"event: {event}\n".encode() + b"data: " + _encoder.encode(data) + b"\n\n"


async def _stream(gw: Gateway) -> AsyncIterator[bytes]:
    gw.console.streams += 1  # counted from the stream's first step: a response never started holds nothing
    try:
        yield b"retry: 2000\n\n"
        while not gw.draining.is_set():
            yield sse("snapshot", await snapshot(gw))
            with trio.move_on_after(INTERVAL_S):
                await gw.draining.wait()
        yield sse("end", {"detail": "server shutting down; reconnect later"})
    finally:
        gw.console.streams -= 1


def blueprint(gw: Gateway) -> Blueprint:
    """GET /v1/admin/stream."""
    bp = Blueprint("console", __name__)

    @bp.get("/v1/admin/stream")
    async def stream() -> Response:
        await authorize(gw, "admin")
        if gw.console.streams >= MAX_STREAMS:
            detail = f"this node already serves {MAX_STREAMS} console streams"
            raise ProblemError(Problem("Too Many Requests", 429, detail, errors=[FieldError("Authorization", detail)]),
                               {"Retry-After": "5"})
        response = Response(_stream(gw), mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.timeout = None
        return response

    return bp
