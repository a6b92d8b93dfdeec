"""The LogStore's Recorder part in memory: each (notification, channel)'s status and its round's steps, and counters.

A plan is applied in one go (no other task runs meanwhile: it is a transaction). Bounded: a
key's row is forgotten `keep_ms` (wall clock: the simulation's) after its last write, so a
day of traffic is not held in memory; the simulation sets `keep_ms` beyond the longest a
delivery can wait (its outages and retries), so no event ever comes for a forgotten key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from protocol.lifecycle import ROUND_SIZE, Status
from protocol.messages import InboxEntry
from protocol.write_plan import KeyState, MoveStatus, StatusKey, TimelineRow, UnreadThrough, WritePlan
from reactor.ports import EventRow, InboxRow, NotFresh, StatusRow

from .store import NotServed


@dataclass(slots=True)
class _Row:
    user_id: str
    priority: str
    created_ms: int
    status: Status
    step: int
    updated_ms: int
    detail: str
    template: str
    steps: dict[tuple[int, Status, str], int] = field(default_factory=dict)  # (step, status, detail) -> at_ms
    counted: set[tuple[int, str]] = field(default_factory=set)  # (round, counter) counted once (CountOnce)


def _not_served(what: str) -> NoReturn:
    raise NotServed(f"{what}: not kept by the in-memory log store of a simulation (reactor/backends/memory)")


class MemoryLogStore:
    def __init__(self, keep_ms: int = 3_600_000) -> None:
        self.keep_ms = keep_ms
        self._rows: dict[StatusKey, _Row] = {}
        self._written: deque[tuple[int, StatusKey]] = deque()  # (at_ms, key) of every write, oldest first
        self.counters: dict[tuple[str, str, int, str], int] = {}  # (date, channel, hour, counter) -> n
        self.plans = 0

    async def apply(self, plan: WritePlan) -> None:
        """The whole plan at once (no other task runs meanwhile): moves first, so a row this plan creates takes its steps
        and count marks. The web inbox's entries and times are not kept (a simulation has no web sessions)."""
        await trio.lowlevel.checkpoint()
        stored = [key for key in plan.fresh if key in self._rows]
        if stored:
            raise NotFresh(stored)
        latest = 0
        for move in plan.moves:
            self._move(move)
            latest = max(latest, move.updated_ms)
        for step in plan.steps:
            row = self._rows.get((step.notification_id, step.channel))
            if row is not None:
                row.steps.setdefault((step.step, step.status, step.detail), step.at_ms)
        for count in plan.counts:
            row = self._rows.get((count.notification_id, count.channel))
            mark = (count.round, count.counter.value)
            if row is not None:
                if mark in row.counted:
                    continue
                row.counted.add(mark)
            bucket = (count.date, count.channel, count.hour, count.counter.value)
            self.counters[bucket] = self.counters.get(bucket, 0) + 1
        self.plans += 1
        if latest:
            self._forget_before(latest - self.keep_ms)

    def _move(self, m: MoveStatus) -> None:
        key = (m.notification_id, m.channel)
        row = self._rows.get(key)
        if row is None:
            if m.create:
                self._rows[key] = _Row(m.user_id, m.priority, m.created_ms, m.status, m.step, m.updated_ms, m.detail, m.template)
                self._written.append((m.updated_ms, key))
            return
        if row.step not in m.after:
            return
        row.status, row.step, row.updated_ms, row.detail = m.status, m.step, m.updated_ms, m.detail
        row.template = m.template or row.template
        self._written.append((m.updated_ms, key))

    def _forget_before(self, at_ms: int) -> None:
        written = self._written
        while written and written[0][0] < at_ms:
            _, key = written.popleft()
            row = self._rows.get(key)
            if row is not None and row.updated_ms < at_ms:
                del self._rows[key]

    def held(self) -> int:
        """Rows kept in memory."""
        return len(self._rows)

    async def key_states(self, keys: Sequence[StatusKey], *, timeline: bool = False) -> list[KeyState]:
        await trio.lowlevel.checkpoint()
        found = []
        for key in dict.fromkeys(keys):
            row = self._rows.get(key)
            if row is None:
                continue
            round_ = row.step // ROUND_SIZE
            rows = None
            if timeline:
                rows = tuple(TimelineRow(step, status, detail, at) for (step, status, detail), at in row.steps.items()
                             if step // ROUND_SIZE == round_)
            found.append(KeyState(key[0], key[1], row.user_id, row.priority, row.created_ms, row.status, round_, rows))
        return found

    async def statuses(self, notification_id: str) -> list[StatusRow]:
        await trio.lowlevel.checkpoint()
        return [
            StatusRow(nid, r.user_id, ch, r.status.value, r.priority, r.created_ms, r.updated_ms, r.detail, r.template)
            for (nid, ch), r in sorted(self._rows.items()) if nid == notification_id
        ]

    async def events(self, notification_id: str) -> list[EventRow]:
        await trio.lowlevel.checkpoint()
        rows = [(ch, step, at, status, detail) for (nid, ch), r in sorted(self._rows.items()) if nid == notification_id
                for (step, status, detail), at in r.steps.items()]
        return [EventRow(ch, status.value, at, detail) for ch, step, at, status, detail in sorted(rows, key=lambda x: (x[0], x[1], x[2]))]

    async def daily_counts(self, date: str, channel: str) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        counts = {"sent": 0, "delivered": 0, "failed": 0}
        for (d, ch, _, counter), n in self.counters.items():
            if (d, ch) == (date, channel):
                counts[counter] = counts.get(counter, 0) + n
        return counts

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    # -- the web inbox and the history pages: not part of a simulation (no web channel sessions, no API reads)

    async def inbox_unread(self, user_id: str, through_id: str | None = None) -> UnreadThrough:
        _not_served("inbox_unread")

    async def history(self, user_id: str, **kwargs: Any) -> tuple[list[StatusRow], str | None]:
        _not_served("history")

    async def inbox_after(self, user_id: str, after_id: str | None, limit: int = 500) -> list[InboxEntry]:
        _not_served("inbox_after")

    async def inbox_get(self, user_id: str, notification_id: str) -> InboxRow | None:
        _not_served("inbox_get")

    async def inbox_page(self, user_id: str, **kwargs: Any) -> tuple[list[InboxRow], str | None]:
        _not_served("inbox_page")

    async def inbox_unread_count(self, user_id: str) -> int:
        _not_served("inbox_unread_count")

