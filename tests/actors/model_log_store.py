"""A LogStore without transactions, in memory: each plan operation applied on its own, in the plan's order.

It is how a backend without transactions (Cassandra: one conditional write per row, counters
bumped per mark) applies a write plan, so tests can crash it between any two operations
(`crash_after`) and check that applying the plan again, or planning the same events again
from what was left, ends where applying it once does. It keeps two copies of a status, as
a Cassandra backend would (the status by id, the user's history row), each moved under the
move's guard on its own, the history copy first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.lifecycle import ROUND_SIZE, Status
from protocol.messages import InboxEntry
from protocol.write_plan import (
    AddStep,
    CountOnce,
    InboxField,
    KeyState,
    MoveStatus,
    SetInboxTime,
    StatusKey,
    TimelineRow,
    UnreadThrough,
    WritePlan,
)
from reactor.ports import EventRow, InboxRow, NotFresh, StatusRow


class Crash(Exception):
    """The store stopped in the middle of a plan (crash_after operations were applied)."""


@dataclass
class _Copy:
    """One copy of a (notification, channel)'s status."""

    user_id: str
    priority: str
    created_ms: int
    status: Status
    step: int
    updated_ms: int
    detail: str
    template: str = ""
    delivered_ms: int | None = None
    error: str = ""


@dataclass
class ModelLogStore:
    inbox: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (user, id) -> [entry, read_ms, archived_ms]
    steps: dict[tuple[str, str, int, Status, str], int] = field(default_factory=dict)  # -> at_ms (insertion order kept)
    marks: set[tuple[str, str, int, str]] = field(default_factory=set)
    counters: dict[tuple[str, str, int, str], int] = field(default_factory=dict)  # (date, channel, hour, counter) -> n
    status: dict[StatusKey, _Copy] = field(default_factory=dict)
    history_copy: dict[StatusKey, _Copy] = field(default_factory=dict)
    crash_after: int | None = None  # apply this many operations of the next plan, then raise Crash
    applied_plans: list[WritePlan] = field(default_factory=list)

    # -- applying

    async def apply(self, plan: WritePlan) -> None:
        ops = plan.operations()
        limit, self.crash_after = self.crash_after, None
        stored = [key for key in plan.fresh if key in self.status]  # checked before any write (no transactions)
        if stored:
            raise NotFresh(stored)
        for n, op in enumerate(ops):
            if limit is not None and n >= limit:
                raise Crash(f"after {n} of {len(ops)} operations")
            self.apply_one(op)
        self.applied_plans.append(plan)

    def apply_one(self, op: InboxEntry | AddStep | CountOnce | MoveStatus | SetInboxTime) -> None:
        if isinstance(op, InboxEntry):
            self.inbox.setdefault((op.user_id, op.notification_id), [op, None, None])
        elif isinstance(op, AddStep):
            self.steps.setdefault((op.notification_id, op.channel, op.step, op.status, op.detail), op.at_ms)
        elif isinstance(op, CountOnce):
            mark = (op.notification_id, op.channel, op.round, op.counter.value)
            if mark not in self.marks:  # a conditional insert (IF NOT EXISTS), then the counter for a new mark only
                self.marks.add(mark)
                bucket = (op.date, op.channel, op.hour, op.counter.value)
                self.counters[bucket] = self.counters.get(bucket, 0) + 1
        elif isinstance(op, MoveStatus):
            for copies in (self.history_copy, self.status):  # each copy a conditional write of its own, history first
                self._move(copies, op)
        elif isinstance(op, SetInboxTime):
            row = self.inbox.get((op.user_id, op.notification_id))
            index = 1 if op.field is InboxField.READ else 2
            if row is not None and row[index] is None:
                row[index] = op.at_ms
        else:
            raise TypeError(op)

    @staticmethod
    def _move(copies: dict[StatusKey, _Copy], m: MoveStatus) -> None:
        key = (m.notification_id, m.channel)
        stored = copies.get(key)
        if stored is None:
            if m.create:
                copies[key] = _Copy(
                    m.user_id, m.priority, m.created_ms, m.status, m.step, m.updated_ms, m.detail, m.template,
                    m.delivered_ms, m.error,
                )
            return
        if stored.step not in m.after:
            return
        stored.status, stored.step, stored.updated_ms, stored.detail, stored.error = m.status, m.step, m.updated_ms, m.detail, m.error
        stored.template = m.template or stored.template
        if stored.delivered_ms is None:
            stored.delivered_ms = m.delivered_ms

    # -- the reads the Recorder makes

    async def key_states(self, keys: Sequence[StatusKey], *, timeline: bool = False) -> list[KeyState]:
        found = []
        for key in dict.fromkeys(keys):
            s = self.status.get(key)
            if s is None:
                continue
            round_ = s.step // ROUND_SIZE
            rows = None
            if timeline:
                rows = tuple(
                    TimelineRow(step, status, detail, at)
                    for (nid, ch, step, status, detail), at in self.steps.items()
                    if (nid, ch) == key and step // ROUND_SIZE == round_
                )
            found.append(KeyState(key[0], key[1], s.user_id, s.priority, s.created_ms, s.status, round_, rows))
        return found

    async def inbox_get(self, user_id: str, notification_id: str) -> InboxRow | None:
        row = self.inbox.get((user_id, notification_id))
        return None if row is None else InboxRow(*row)

    async def inbox_unread(self, user_id: str, through_id: str | None = None) -> UnreadThrough:
        mine = sorted(
            ((r[0].seq, nid), r) for (user, nid), r in self.inbox.items() if user == user_id
        )
        if through_id is None:
            top = mine[-1][0] if mine else None
        else:
            top = next((pos for pos, _ in mine if pos[1] == through_id), None)
        if top is None:
            return UnreadThrough(user_id, through_id, (), None)
        ids = tuple(pos[1] for pos, r in mine if pos <= top and r[1] is None and r[2] is None)
        return UnreadThrough(user_id, through_id, ids, top[1])

    # -- what is observable, for comparisons

    def snapshot(self) -> dict[str, Any]:
        """Statuses, both copies, timelines (lifecycle order, as the LogStore reads them), counters, inbox."""
        timeline: dict[StatusKey, list[tuple[int, str, int, str]]] = {}
        for (nid, ch, step, status, detail), at in self.steps.items():
            timeline.setdefault((nid, ch), []).append((step, status.value, at, detail))
        return {
            "status": {k: vars(v) for k, v in sorted(self.status.items())},
            "history": {k: vars(v) for k, v in sorted(self.history_copy.items())},
            "timeline": {k: [(s, at, d) for _, s, at, d in sorted(v, key=lambda r: (r[0], r[2]))] for k, v in sorted(timeline.items())},
            "counters": {k: v for k, v in sorted(self.counters.items()) if v},
            "inbox": {k: (v[0], v[1], v[2]) for k, v in sorted(self.inbox.items())},
        }

    async def statuses(self, notification_id: str) -> list[StatusRow]:
        return [
            StatusRow(nid, s.user_id, ch, s.status.value, s.priority, s.created_ms, s.updated_ms, s.detail, s.template)
            for (nid, ch), s in sorted(self.status.items())
            if nid == notification_id
        ]

    async def events(self, notification_id: str) -> list[EventRow]:
        rows = [(ch, step, at, n, status, detail) for n, ((nid, ch, step, status, detail), at) in enumerate(self.steps.items()) if nid == notification_id]
        return [EventRow(ch, status.value, at, detail) for ch, step, at, _, status, detail in sorted(rows)]

    async def history(self, user_id: str, *, limit: int = 50, **_: Any) -> tuple[list[StatusRow], str | None]:
        """Every history row of the user, newest first (no paging: the comparisons read everything)."""
        rows = sorted(
            ((c.created_ms, nid, ch), c) for (nid, ch), c in self.history_copy.items() if c.user_id == user_id
        )
        return [
            StatusRow(nid, c.user_id, ch, c.status.value, c.priority, created, c.updated_ms, c.detail, c.template)
            for (created, nid, ch), c in reversed(rows)
        ][:limit], None

    async def daily_counts(self, date: str, channel: str) -> dict[str, int]:
        counts = {"sent": 0, "delivered": 0, "failed": 0}
        for (d, ch, _, counter), n in self.counters.items():
            if (d, ch) == (date, channel):
                counts[counter] += n
        return counts

    async def inbox_page(self, user_id: str, *, archived: bool = False, limit: int = 50, **_: Any) -> tuple[list[InboxRow], str | None]:
        rows = sorted(((r[0].seq, nid), r) for (user, nid), r in self.inbox.items() if user == user_id and (r[2] is not None) == archived)
        return [InboxRow(*r) for _, r in reversed(rows)][:limit], None
