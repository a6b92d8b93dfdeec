"""`herald tail`: follow notifications' deliveries and status changes live, in the terminal or as JSON lines.

It reads the node's operator feed (GET /v1/admin/stream, console_feed.py) for the
notifications the node accepts, keeps those of the user and channel asked for, and reads
each one's timeline (GET /v1/notifications/{id}) after every snapshot until it is final
and then for FOLLOW_FINAL_S more (a web notification is final once in the inbox; its
`delivered` comes when a client sees it), printing each step once, as it appears.

What it sees is what that node's front end accepted (its feed keeps the latest 50 a
snapshot): a watch, not an audit; the history of a user is GET
/v1/users/{user_id}/notifications. `Timelines` is the pure part: which steps are new.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import trio

FOLLOW_FINAL_S = 30.0  # a final notification is still read this long (late steps: a web client's `delivered`)
MAX_FOLLOWED = 200  # notifications followed at once; past it the oldest are let go
READS_AT_ONCE = 8


@dataclass(frozen=True)
class Step:
    """One step of a notification's timeline, as `herald tail` prints it."""

    at: str
    notification_id: str
    user_id: str
    channel: str
    status: str
    detail: str = ""

    def as_json(self) -> str:
        return json.dumps(self.__dict__)


@dataclass
class _Followed:
    user_id: str
    seen: set[tuple[str, str, str, str]] = field(default_factory=set)  # (channel, status, at, detail)
    final_at: float | None = None  # trio clock when it was first seen final


class Timelines:
    """The notifications followed and the steps already printed of each (pure: no I/O)."""

    def __init__(self, user: str | None = None, channel: str | None = None) -> None:
        self.user = user
        self.channel = channel
        self.followed: dict[str, _Followed] = {}
        self.known: set[str] = set()  # every id ever taken up (a notification is followed once)

    def offer(self, notification_id: str, user_id: str, channels: list[str]) -> bool:
        """Follow a notification the feed shows, if it is the user's and goes on the channel asked; whether it is new."""
        if notification_id in self.known:
            return False
        if self.user is not None and user_id != self.user:
            return False
        if self.channel is not None and self.channel not in channels:
            return False
        self.known.add(notification_id)
        self.followed[notification_id] = _Followed(user_id)
        while len(self.followed) > MAX_FOLLOWED:
            del self.followed[next(iter(self.followed))]
        return True

    def steps(self, notification_id: str, view: dict[str, Any], now: float) -> list[Step]:
        """The steps of a status view (GET /v1/notifications/{id}) not printed yet, in time order."""
        followed = self.followed.get(notification_id)
        if followed is None:
            return []
        new: list[Step] = []
        for channel, status in (view.get("channels") or {}).items():
            if self.channel is not None and channel != self.channel:
                continue
            for attempt in status.get("attempts", []):
                key = (channel, attempt["status"], attempt["at"], attempt.get("detail", ""))
                if key not in followed.seen:
                    followed.seen.add(key)
                    new.append(Step(attempt["at"], notification_id, followed.user_id, channel, attempt["status"], key[3]))
        if view.get("final") and followed.final_at is None:
            followed.final_at = now
        return sorted(new, key=lambda s: (s.at, s.channel))

    def done(self, now: float) -> list[str]:
        """Let go of the notifications final for FOLLOW_FINAL_S; their ids."""
        gone = [nid for nid, f in self.followed.items() if f.final_at is not None and now - f.final_at >= FOLLOW_FINAL_S]
        for nid in gone:
            del self.followed[nid]
        return gone


async def snapshots(client: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    """The node's feed: each `snapshot` event's JSON (the admin key in the client's header); ends with the stream."""
    async with client.stream("GET", "/v1/admin/stream", headers={"Accept": "text/event-stream"}, timeout=None) as response:
        if response.status_code != 200:
            await response.aread()
            raise TailError(f"GET /v1/admin/stream: {response.status_code} {_detail(response)}")
        event, data = "message", ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
            elif line == "":
                if event == "snapshot" and data:
                    yield json.loads(data)
                event, data = "message", ""


class TailError(Exception):
    """The node refused or ended the feed."""


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return response.text[:200]


_COLOURS = {"delivered": "green", "sent": "green", "read": "green", "opened": "green", "failed": "red", "dead_lettered": "red",
            "retry_scheduled": "yellow", "accepted": "cyan", "queued": "cyan"}


def printer(as_json: bool, out: TextIO = sys.stdout) -> Callable[[Step], None]:
    """How a step is shown: a JSON line, or a line for people (rich, coloured by status when out is a terminal)."""
    if as_json:
        def show_json(step: Step) -> None:
            print(step.as_json(), file=out, flush=True)
        return show_json
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=out, highlight=False, soft_wrap=True)

    def show(step: Step) -> None:
        colour = _COLOURS.get(step.status, "white")
        detail = f"  {escape(step.detail)}" if step.detail else ""
        console.print(f"{escape(step.at[11:23])}  {step.notification_id}  {escape(step.user_id)}  {step.channel:<5}  "
                      f"[{colour}]{escape(step.status)}[/]{detail}")
    return show


async def tail(url: str, key: str, user: str | None, channel: str | None, show: Callable[[Step], None],
               stop_after: int | None = None, on_start: Callable[[], None] = lambda: None) -> int:
    """Follow the node's notifications until interrupted (or `stop_after` steps were shown); the steps shown."""
    timelines = Timelines(user, channel)
    shown = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        async def read(nid: str, limiter: trio.CapacityLimiter, found: dict[str, dict[str, Any]]) -> None:
            async with limiter:
                response = await client.get(f"/v1/notifications/{nid}")
            if response.status_code == 200:
                found[nid] = response.json()

        first = True
        async for snap in snapshots(client):
            for accepted in reversed(snap["recent"]):  # the oldest first
                if first:  # what was accepted before the tail started is not followed
                    timelines.known.add(accepted["id"])
                else:
                    timelines.offer(accepted["id"], accepted["user_id"], accepted["channels"])
            if first:
                on_start()  # following from here: what the node accepts from now on is shown
            first = False
            found: dict[str, dict[str, Any]] = {}
            limiter = trio.CapacityLimiter(READS_AT_ONCE)
            async with trio.open_nursery() as nursery:
                for nid in list(timelines.followed):
                    nursery.start_soon(read, nid, limiter, found)
            now = trio.current_time()
            for nid in list(timelines.followed):
                for step in timelines.steps(nid, found[nid], now) if nid in found else ():
                    show(step)
                    shown += 1
                    if stop_after is not None and shown >= stop_after:
                        return shown
            timelines.done(now)
    return shown
