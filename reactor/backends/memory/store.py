"""The Store's delivery-path part in memory: the Scheduler's entries, the dead-letter queue, the send ledger.

The send ledger is bounded: a row is forgotten `ledger_keep_ms` (wall clock, which is the
simulation's clock) after it was written. The ledger answers a redelivered attempt
(maybe_sent) whether it was sent; in a simulation a record is redelivered within seconds (a
consumer's window after a restart), and the simulation keeps rows ten minutes past the longest
a delivery can wait, so a day of traffic does not hold every notification in memory.

Metadata (get_meta, put_meta_if_absent) is kept; topics, fan-out jobs and digests are not
part of a simulation and raise NotServed.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import NoReturn

import trio

from reactor.ports import DeadLetter, DigestEvent, DigestFire, DigestWindow, DlqFilter, FanoutJob, Scheduled


class NotServed(NotImplementedError):
    """A Store call outside the delivery path: not kept by the simulation's store."""


def _not_served(what: str) -> NoReturn:
    raise NotServed(f"{what}: not kept by the in-memory store of a simulation (reactor/backends/memory)")


class MemoryStore:
    def __init__(self, ledger_keep_ms: int = 3_600_000) -> None:
        self._meta: dict[str, str] = {}
        self._scheduled: dict[str, tuple[Scheduled, str, int]] = {}  # id -> (entry, owner, lease_until_ms)
        self._due: list[tuple[int, str]] = []  # (due or lease end, id), a heap; stale pairs are skipped
        self._dead: dict[int, DeadLetter] = {}
        self._dead_by_key: dict[tuple[str, str], int] = {}
        self._next_dead = 1
        self._ledger: dict[tuple[str, str], str] = {}
        self._ledger_order: deque[tuple[int, tuple[str, str]]] = deque()
        self.ledger_keep_ms = ledger_keep_ms

    # -- metadata

    async def get_meta(self, key: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._meta.get(key)

    async def put_meta_if_absent(self, key: str, value: str) -> str:
        await trio.lowlevel.checkpoint()
        return self._meta.setdefault(key, value)

    async def forget_meta(self, key: str) -> None:
        await trio.lowlevel.checkpoint()
        self._meta.pop(key, None)

    # -- the Scheduler's entries

    async def schedule(self, entry: Scheduled) -> None:
        await trio.lowlevel.checkpoint()
        self._scheduled[entry.id] = (entry, "", 0)
        heapq.heappush(self._due, (entry.due_ms, entry.id))

    async def unschedule(self, ids: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for i in ids:
            self._scheduled.pop(i, None)

    async def scheduled(self) -> list[Scheduled]:
        await trio.lowlevel.checkpoint()
        return sorted((e for e, _, _ in self._scheduled.values()), key=lambda e: (e.due_ms, e.id))

    def _first(self) -> tuple[int, str] | None:
        """The heap's first live pair (dropping stale ones: unscheduled, or pushed again at a later time)."""
        while self._due:
            at, i = self._due[0]
            held = self._scheduled.get(i)
            if held is not None and max(held[0].due_ms, held[2]) == at:
                return at, i
            heapq.heappop(self._due)
        return None

    async def claim_due(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[Scheduled]:
        await trio.lowlevel.checkpoint()
        claimed: list[Scheduled] = []
        while len(claimed) < limit:
            first = self._first()
            if first is None or first[0] > now_ms:
                break
            heapq.heappop(self._due)
            entry = self._scheduled[first[1]][0]
            self._scheduled[entry.id] = (entry, owner, now_ms + lease_ms)
            heapq.heappush(self._due, (now_ms + lease_ms, entry.id))  # claimable again once the lease ends
            claimed.append(entry)
        return claimed

    async def cancel_scheduled(self, notification_id: str, channel: str, id_prefixes: Sequence[str], at_ms: int) -> bool:
        _not_served("cancel_scheduled")

    async def next_due_ms(self) -> int | None:
        await trio.lowlevel.checkpoint()
        first = self._first()
        return None if first is None else first[0]

    # -- the dead-letter queue

    async def dead_letter(self, entry: DeadLetter) -> int:
        await trio.lowlevel.checkpoint()
        key = (entry.channel, entry.notification_id)
        old = self._dead_by_key.pop(key, None)
        if old is not None:
            del self._dead[old]
        number, self._next_dead = self._next_dead, self._next_dead + 1
        self._dead[number] = DeadLetter(number, entry.channel, entry.notification_id, entry.user_id, entry.error, entry.attempts,
                                        entry.created_ms, entry.dead_ms, entry.record)
        self._dead_by_key[key] = number
        return number

    def _matches(self, d: DeadLetter, s: DlqFilter) -> bool:
        return ((s.ids is None or d.id in s.ids) and (s.channel is None or d.channel == s.channel)
                and (s.notification_id is None or d.notification_id == s.notification_id)
                and (s.before_ms is None or d.dead_ms < s.before_ms))

    async def dead_letters(self, selection: DlqFilter, after_id: int = 0, limit: int = 100) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        found = [d for i, d in sorted(self._dead.items()) if i > after_id and self._matches(d, selection)]
        return found[:limit]

    async def discard_dead_letters(self, ids: Sequence[int]) -> int:
        await trio.lowlevel.checkpoint()
        gone = 0
        for i in ids:
            d = self._dead.pop(i, None)
            if d is not None:
                self._dead_by_key.pop((d.channel, d.notification_id), None)
                gone += 1
        return gone

    async def resolve_dead_letters(self, channel: str, notification_ids: Sequence[str]) -> list[str]:
        await trio.lowlevel.checkpoint()
        found: list[str] = []
        for nid in sorted(set(notification_ids)):
            number = self._dead_by_key.pop((channel, nid), None)
            if number is not None:
                del self._dead[number]
                found.append(nid)
        return found

    async def dead_letter_count(self, channel: str | None = None) -> int:
        await trio.lowlevel.checkpoint()
        return sum(1 for d in self._dead.values() if channel is None or d.channel == channel)

    # -- the send ledger

    async def sent_status(self, notification_id: str, channel: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._ledger.get((notification_id, channel))

    async def mark_sent(self, notification_id: str, channel: str, status: str, at_ms: int) -> None:
        await trio.lowlevel.checkpoint()
        key = (notification_id, channel)
        if key not in self._ledger:
            self._ledger[key] = status
            self._ledger_order.append((at_ms, key))
        while self._ledger_order and self._ledger_order[0][0] < at_ms - self.ledger_keep_ms:
            self._ledger.pop(self._ledger_order.popleft()[1], None)

    async def mark_sent_many(self, marks: Sequence[tuple[str, str, str, int]]) -> None:
        for notification_id, channel, status, at_ms in marks:
            await self.mark_sent(notification_id, channel, status, at_ms)

    # -- not part of a simulation

    async def add_subscribers(self, topic: str, user_ids: Sequence[str]) -> int:
        _not_served("add_subscribers")

    async def remove_subscribers(self, topic: str, user_ids: Sequence[str]) -> int:
        _not_served("remove_subscribers")

    async def subscribers(self, topic: str, after: str, limit: int) -> list[str]:
        _not_served("subscribers")

    async def subscriber_count(self, topic: str) -> int:
        _not_served("subscriber_count")

    async def add_fanout(self, job: FanoutJob) -> None:
        _not_served("add_fanout")

    async def fanout(self, job_id: str) -> FanoutJob | None:
        _not_served("fanout")

    async def claim_fanout(self, owner: str, now_ms: int, lease_ms: int) -> FanoutJob | None:
        _not_served("claim_fanout")

    async def checkpoint_fanout(self, owner: str, job: FanoutJob, now_ms: int, lease_ms: int) -> bool:
        _not_served("checkpoint_fanout")

    async def add_digest_event(self, event: DigestEvent, due_ms: int, deadline_ms: int, max_events: int) -> None:
        _not_served("add_digest_event")

    async def claim_digests(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[DigestFire]:
        _not_served("claim_digests")

    async def finish_digest(self, fire_id: str) -> None:
        _not_served("finish_digest")

    async def cancel_digest_event(self, notification_id: str, channels: Sequence[str], at_ms: int) -> bool:
        _not_served("cancel_digest_event")

    async def digest_windows(self, user_id: str) -> list[DigestWindow]:
        _not_served("digest_windows")

    async def next_digest_ms(self) -> int | None:
        _not_served("next_digest_ms")
