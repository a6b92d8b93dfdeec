"""The LogStore port on Apache Cassandra (schema.py): write plans applied without transactions, idempotently.

A plan's parts are applied in the plan's order (protocol/write_plan.py, `WritePlan.operations`),
each part only once the one before it is durable (at the URL's consistency), the operations of
one part concurrently; the first three parts (inserts if absent, which depend on nothing but
themselves) run together, all of them before any move. Each operation is atomic on its own:

- InboxEntry, AddStep: `INSERT ... IF NOT EXISTS` (a lightweight transaction): the stored row stays,
  with its first payload or time.
- CountOnce: counting by idempotent inserts, no counter columns (a counter increment is not
  idempotent: a timed-out one may or may not have counted, and a retry may count twice). The mark
  (notification, channel, round, counter) is inserted if absent (a lightweight transaction) and
  keeps the date and hour it was first counted in; then a row for it is written under its
  (date, channel, hour) in daily_notification_stats, with the mark's stored date and hour: the
  same row however often it is written. A count is the number of rows (daily_counts). A crash
  between the two leaves the mark; the plan applied or planned again writes the row.
- MoveStatus: each copy of the status (the user's history row, then the status row by id) is moved
  by a conditional update, `IF step IN (<the move's guard>)`; a missing row is created (`IF NOT
  EXISTS`) only if the move may create it and there is no status row. The history goes first, as
  the plan's order says: a crash between the two leaves the status row where it was, so planning
  the same events again makes the same move, which then finds the history moved (its guard no
  longer holds) and moves the status row. A creating move reads the status row first, so a stale
  one (a row is there, its step not in the guard) writes neither copy. `delivered_ms` is set only
  where unset; `template` only by a move that has one. Moves of one key run one after another.
- SetInboxTime: `UPDATE ... IF <the entry exists> AND read_ms = null` (or archived_ms).

So applying a plan twice, or again after a crash part-way, gives what applying it once gives.
Concurrent writers of one (notification, channel) are not expected (the Recorder is the only
writer, and it serializes a key's events); the conditions keep each copy's own moves in order
anyway, but a creating move racing another writer's could leave a history row of its own.

Reads run at the URL's consistency (LOCAL_QUORUM by default), which sees every conditional write
acknowledged before (their commit is at that consistency too). The inbox listings read the user's
whole (retained) inbox partition and sort it here, by delivery order (seq); a user's history is
read a page at a time from its partition, newest first. Cursors: reactor/backends/cursors.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

import msgspec
import trio

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
from reactor.backends import BackendUnavailable
from reactor.backends.cursors import decode_cursor, decode_inbox_cursor, encode_cursor, encode_inbox_cursor
from reactor.ports import EventRow, InboxRow, NotFresh, StatusRow

from .schema import tables
from .session import Cql, connect
from .url import CassandraUrl

T = TypeVar("T")

_STATUS = {s.value: s for s in Status}
_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[InboxEntry] = msgspec.json.Decoder(InboxEntry)
_MIN_BIGINT = -(2**63)
_HOURS = list(range(24))

_INSERT_INBOX = "INSERT INTO web_inbox (user_id, notification_id, seq, created_ms, payload) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
_INSERT_STEP = (
    "INSERT INTO notification_events (notification_id, channel, step, status, detail, at_ms, written)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
)
_INSERT_MARK = "INSERT INTO count_marks (notification_id, channel, round, counter, date, hour) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"
_READ_MARK = "SELECT date, hour FROM count_marks WHERE notification_id = ? AND channel = ? AND round = ? AND counter = ?"
_INSERT_COUNTED = (
    "INSERT INTO daily_notification_stats (date, channel, hour, counter, notification_id, round) VALUES (?, ?, ?, ?, ?, ?)"
)
_STEP_OF = "SELECT step FROM notification_status WHERE notification_id = ? AND channel = ?"
_CREATE_STATUS = (
    "INSERT INTO notification_status (notification_id, channel, user_id, status, step, priority, created_ms, updated_ms,"
    " detail, template) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
)
_MOVE_STATUS = (
    "UPDATE notification_status SET status = ?, step = ?, updated_ms = ?, detail = ?{template}"
    " WHERE notification_id = ? AND channel = ? IF step IN ?"
)
_CREATE_LOG = (
    "INSERT INTO notification_logs (user_id, created_ms, notification_id, channel, status, step, priority, template_id,"
    " updated_ms, delivered_ms, error_message, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
)
_MOVE_LOG = (
    "UPDATE notification_logs SET status = ?, step = ?, updated_ms = ?, error_message = ?, metadata['detail'] = ?{template}"
    " WHERE user_id = ? AND created_ms = ? AND notification_id = ? AND channel = ? IF step IN ?"
)
_FIRST_DELIVERY = (
    "UPDATE notification_logs SET delivered_ms = ? WHERE user_id = ? AND created_ms = ? AND notification_id = ? AND channel = ?"
    " IF delivered_ms = null"
)
_SET_INBOX_TIME = {
    field: f"UPDATE web_inbox SET {column} = ? WHERE user_id = ? AND notification_id = ? IF seq >= ? AND {column} = null"
    for field, column in ((InboxField.READ, "read_ms"), (InboxField.ARCHIVED, "archived_ms"))
}
_STATUSES = (
    "SELECT notification_id, user_id, channel, status, priority, created_ms, updated_ms, detail, template, step"
    " FROM notification_status WHERE notification_id = ?"
)
_TIMELINE = (
    "SELECT step, status, detail, at_ms FROM notification_events"
    " WHERE notification_id = ? AND channel = ? AND step >= ? AND step < ?"
)
_EVENTS = "SELECT channel, status, at_ms, detail, step, written FROM notification_events WHERE notification_id = ?"
_INBOX = "SELECT notification_id, seq, payload, read_ms, archived_ms FROM web_inbox WHERE user_id = ?"
_INBOX_STATE = "SELECT notification_id, seq, read_ms, archived_ms FROM web_inbox WHERE user_id = ?"  # without the payloads
_INBOX_ONE = "SELECT payload, read_ms, archived_ms FROM web_inbox WHERE user_id = ? AND notification_id = ?"
_DAILY = (
    "SELECT counter, COUNT(*) FROM daily_notification_stats WHERE date = ? AND channel = ? AND hour IN ?"
    " GROUP BY date, channel, hour, counter"
)
_HISTORY = (
    "SELECT notification_id, user_id, channel, status, priority, created_ms, updated_ms, metadata, template_id"
    " FROM notification_logs WHERE user_id = ?{lower}{upper} LIMIT ?"
)
_LOWER = " AND (created_ms, notification_id, channel) >= (?, ?, ?)"
_UPPER = " AND (created_ms, notification_id, channel) < (?, ?, ?)"

InboxRecord = tuple[str, int, "bytes | None", "int | None", "int | None"]  # notification_id, seq, payload, read_ms, archived_ms


def _entry(payload: bytes | None) -> InboxEntry:
    if payload is None:
        raise RuntimeError("an inbox entry read without its payload")  # a read of _inbox(payloads=False) used as a listing
    return _decoder.decode(payload)


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def _each(items: Iterable[T], fn: Callable[[T], Awaitable[None]]) -> None:
    """fn on every item, concurrently (the session bounds how many queries are in flight).

    A failure is raised as itself, not in a group (a caller handles BackendUnavailable as the port's
    other backends raise it): the first BackendUnavailable, else the first error.
    """
    try:
        async with trio.open_nursery() as nursery:
            for item in items:
                nursery.start_soon(fn, item)
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if not all(isinstance(exc, Exception) for exc in leaves):
            raise  # a cancellation (or worse) goes on as it came
        raise next((exc for exc in leaves if isinstance(exc, BackendUnavailable)), leaves[0])


class CassandraLogStore:
    """The LogStore port on one keyspace of a Cassandra cluster."""

    IN_FLIGHT = 128  # queries in flight at once per store

    def __init__(self, url: CassandraUrl) -> None:
        self.url = url
        self._cql: Cql | None = None
        self._limiter = trio.CapacityLimiter(self.IN_FLIGHT)
        self._written = 0  # the last `written` stamp handed out (microseconds)

    async def open(self) -> None:
        """Connect (BackendUnavailable if no node answers), create the keyspace and the tables if they are missing."""
        if self._cql is not None:
            return
        cql = await connect(self.url)
        try:
            await cql.execute_ddl(
                f"CREATE KEYSPACE IF NOT EXISTS {self.url.keyspace} WITH replication = {self.url.replication_cql()}"
            )
            await cql.use_keyspace(self.url.keyspace)
            for statement in tables(self.url.ttl_days * 86_400):
                await cql.execute_ddl(statement)
        except BaseException:
            with trio.CancelScope(shield=True):
                await cql.close()
            raise
        self._cql = cql

    async def close(self) -> None:
        cql, self._cql = self._cql, None
        if cql is not None:
            with trio.CancelScope(shield=True):
                await cql.close()

    # -- plumbing

    def _session(self) -> Cql:
        if self._cql is None:
            raise RuntimeError("CassandraLogStore is not open")
        return self._cql

    async def _run(self, cql: str, params: Sequence[Any], *, serial: bool = False) -> list[tuple[Any, ...]]:
        session = self._session()
        statement = await session.prepare(cql, serial=serial)
        async with self._limiter:
            return await session.run(statement, params)

    async def _applied(self, cql: str, params: Sequence[Any]) -> bool:
        """A conditional write: whether it applied."""
        rows = await self._run(cql, params, serial=True)
        return bool(rows[0][0])

    def _stamp(self) -> int:
        """A `written` stamp: wall-clock microseconds, strictly increasing in this process (the order steps came in)."""
        self._written = max(self._written + 1, time.time_ns() // 1000)
        return self._written

    # -- writes

    async def apply(self, plan: WritePlan) -> None:
        """Apply a write plan: its parts in the plan's order, each operation idempotent (the module docstring)."""
        if plan.is_empty():
            return
        self._session()
        if plan.fresh:  # no transactions: checked before any write (a read of those keys, as the Recorder's would be)
            stored = await self.key_states(plan.fresh)
            if stored:
                raise NotFresh([(k.notification_id, k.channel) for k in stored])
        # The inserts-if-absent (inbox entries, timeline rows, counts) only add what is missing and
        # depend on nothing but themselves: together, all of them before any move.
        stamps = {id(s): self._stamp() for s in plan.steps}
        first: dict[tuple[str, str, int, str], CountOnce] = {}
        for c in plan.counts:
            first.setdefault((c.notification_id, c.channel, c.round, c.counter.value), c)
        adds: list[Callable[[], Awaitable[None]]] = [
            *(partial(self._insert_inbox, e) for e in plan.inbox),
            *(partial(self._insert_step, s, stamps[id(s)]) for s in plan.steps),
            *(partial(self._count_once, c) for c in first.values()),
        ]
        if adds:
            await _each(adds, lambda add: add())
        if plan.moves:
            by_key: dict[StatusKey, list[MoveStatus]] = {}
            for m in plan.moves:
                by_key.setdefault((m.notification_id, m.channel), []).append(m)
            await _each(by_key.values(), self._moves)
        if plan.inbox_times:
            await _each(plan.inbox_times, self._set_inbox_time)

    async def _insert_inbox(self, e: InboxEntry) -> None:
        await self._applied(_INSERT_INBOX, (e.user_id, e.notification_id, e.seq, e.created_ms, _encoder.encode(e)))

    async def _insert_step(self, s: AddStep, written: int) -> None:
        await self._applied(_INSERT_STEP, (s.notification_id, s.channel, s.step, s.status.value, s.detail, s.at_ms, written))

    async def _count_once(self, c: CountOnce) -> None:
        key = (c.notification_id, c.channel, c.round, c.counter.value)
        date, hour = c.date, c.hour
        if not await self._applied(_INSERT_MARK, (*key, date, hour)):
            [(date, hour)] = await self._run(_READ_MARK, key)  # counted before: under its first date and hour
        await self._run(_INSERT_COUNTED, (date, c.channel, hour, c.counter.value, c.notification_id, c.round))

    async def _moves(self, moves: list[MoveStatus]) -> None:
        for m in moves:
            await self._move(m)

    async def _move(self, m: MoveStatus) -> None:
        """Move the history row, then the status row, each only from a step in the guard (creating them if it may)."""
        guard = sorted(m.after)
        if m.create:
            stored = await self._run(_STEP_OF, (m.notification_id, m.channel))
            if not stored:
                await self._create_or_move_log(m, guard)
                created = await self._applied(_CREATE_STATUS, (
                    m.notification_id, m.channel, m.user_id, m.status.value, m.step, m.priority, m.created_ms, m.updated_ms,
                    m.detail, m.template,
                ))
                if created:
                    return
            elif stored[0][0] not in m.after:
                return  # stale: neither copy moves
        if await self._move_log(m, guard):
            await self._first_delivery(m)
        template = ", template = ?" if m.template else ""
        await self._applied(_MOVE_STATUS.format(template=template), (
            m.status.value, m.step, m.updated_ms, m.detail, *((m.template,) if m.template else ()), m.notification_id, m.channel,
            guard,
        ))

    async def _create_or_move_log(self, m: MoveStatus, guard: list[int]) -> None:
        created = await self._applied(_CREATE_LOG, (
            m.user_id, m.created_ms, m.notification_id, m.channel, m.status.value, m.step, m.priority, m.template or None,
            m.updated_ms, m.delivered_ms, m.error, {"detail": m.detail},
        ))
        if not created and await self._move_log(m, guard):
            await self._first_delivery(m)

    async def _move_log(self, m: MoveStatus, guard: list[int]) -> bool:
        template = ", template_id = ?" if m.template else ""
        return await self._applied(_MOVE_LOG.format(template=template), (
            m.status.value, m.step, m.updated_ms, m.error, m.detail, *((m.template,) if m.template else ()),
            m.user_id, m.created_ms, m.notification_id, m.channel, guard,
        ))

    async def _first_delivery(self, m: MoveStatus) -> None:
        if m.delivered_ms is not None:
            await self._applied(_FIRST_DELIVERY, (m.delivered_ms, m.user_id, m.created_ms, m.notification_id, m.channel))

    async def _set_inbox_time(self, t: SetInboxTime) -> None:
        await self._applied(_SET_INBOX_TIME[t.field], (t.at_ms, t.user_id, t.notification_id, _MIN_BIGINT))

    # -- the Recorder's reads

    async def key_states(self, keys: Sequence[StatusKey], *, timeline: bool = False) -> list[KeyState]:
        """The stored status of each of these (notification, channel) keys that has a row (with its round's timeline)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[StatusKey, KeyState] = {}

        async def read(notification_id: str) -> None:
            for nid, user_id, channel, status, priority, created_ms, _, _, _, step in await self._run(_STATUSES, (notification_id,)):
                found[(nid, channel)] = KeyState(nid, channel, user_id, priority, created_ms, _STATUS[status], step // ROUND_SIZE)

        await _each(dict.fromkeys(k[0] for k in wanted), read)
        states = [found[k] for k in wanted if k in found]
        if not timeline:
            return states
        rows: dict[StatusKey, tuple[TimelineRow, ...]] = {}

        async def read_timeline(state: KeyState) -> None:
            first = state.round * ROUND_SIZE
            got = await self._run(_TIMELINE, (state.notification_id, state.channel, first, first + ROUND_SIZE))
            rows[(state.notification_id, state.channel)] = tuple(
                TimelineRow(step, _STATUS[status], detail, at_ms) for step, status, detail, at_ms in got
            )

        await _each(states, read_timeline)
        return [msgspec.structs.replace(s, timeline=rows[(s.notification_id, s.channel)]) for s in states]

    async def _inbox(self, user_id: str, *, payloads: bool = True) -> list[InboxRecord]:
        """The user's whole inbox, in delivery order (seq, then id); without its payloads (None) unless asked."""
        if payloads:
            rows = await self._run(_INBOX, (user_id,))
        else:
            rows = [(nid, seq, None, read_ms, archived_ms) for nid, seq, read_ms, archived_ms in await self._run(_INBOX_STATE, (user_id,))]
        return sorted(((nid, seq, payload, read_ms, archived_ms) for nid, seq, payload, read_ms, archived_ms in rows),
                      key=lambda r: (r[1], r[0]))

    async def inbox_unread(self, user_id: str, through_id: str | None = None) -> UnreadThrough:
        """The user's entries neither read nor archived, delivered up to and including through_id (the newest when None)."""
        inbox = await self._inbox(user_id, payloads=False)
        if through_id is None:
            top = inbox[-1] if inbox else None
        else:
            top = next((r for r in inbox if r[0] == through_id), None)
        if top is None:
            return UnreadThrough(user_id, through_id, (), None)
        ids = tuple(r[0] for r in inbox if r[3] is None and r[4] is None and (r[1], r[0]) <= (top[1], top[0]))
        return UnreadThrough(user_id, through_id, ids, top[0])

    # -- reads

    async def statuses(self, notification_id: str) -> list[StatusRow]:
        rows = await self._run(_STATUSES, (notification_id,))
        return [StatusRow(nid, user, channel, status, priority, created, updated, detail or "", template or "")
                for nid, user, channel, status, priority, created, updated, detail, template, _ in rows]

    async def events(self, notification_id: str) -> list[EventRow]:
        """The attempt timeline: by channel, each in lifecycle order (step), then by time, then in the order written."""
        rows = await self._run(_EVENTS, (notification_id,))
        rows.sort(key=lambda r: (r[0], r[4], r[2], r[5] or 0))
        return [EventRow(channel, status, at_ms, detail) for channel, status, at_ms, detail, _, _ in rows]

    async def history(
        self,
        user_id: str,
        *,
        channel: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[StatusRow], str | None]:
        """The user's notifications newest first (created_ms in [since_ms, until_ms)), a page at a time."""
        if limit < 1:
            raise ValueError("limit must be positive")
        uppers = [] if until_ms is None else [(until_ms, "", "")]
        if cursor is not None:
            uppers.append(decode_cursor(cursor, user_id))
        upper: tuple[int, str, str] | None = min(uppers) if uppers else None
        lower = None if since_ms is None else (since_ms, "", "")
        fetch = limit + 1 if channel is None else max(limit + 1, 200)  # a channel is filtered here: read more at once
        matched: list[StatusRow] = []
        while len(matched) <= limit:
            query = _HISTORY.format(lower=_LOWER if lower else "", upper=_UPPER if upper else "")
            rows = await self._run(query, (user_id, *(lower or ()), *(upper or ()), fetch))
            for nid, user, ch, status, priority, created, updated, metadata, template in rows:
                if channel is None or ch == channel:
                    matched.append(StatusRow(nid, user, ch, status, priority, created, updated,
                                             (metadata or {}).get("detail", ""), template or ""))
            if len(rows) < fetch:
                break
            upper = (rows[-1][5], rows[-1][0], rows[-1][2])
        page = matched[:limit]
        if len(matched) <= limit:
            return page, None
        last = page[-1]
        return page, encode_cursor(user_id, last.created_ms, last.notification_id, last.channel)

    async def inbox_after(self, user_id: str, after_id: str | None, limit: int = 500) -> list[InboxEntry]:
        """Web notifications delivered after after_id (all retained ones when None or unknown), oldest first."""
        inbox = await self._inbox(user_id)
        after = next((r[1] for r in inbox if r[0] == after_id), -1) if after_id else -1
        return [_entry(r[2]) for r in inbox if r[1] > after][:limit]

    async def inbox_get(self, user_id: str, notification_id: str) -> InboxRow | None:
        rows = await self._run(_INBOX_ONE, (user_id, notification_id))
        if not rows:
            return None
        payload, read_ms, archived_ms = rows[0]
        return InboxRow(_decoder.decode(payload), read_ms, archived_ms)

    async def inbox_page(
        self, user_id: str, *, unread: bool = False, archived: bool = False, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[InboxRow], str | None]:
        """The user's inbox newest first (delivery order): not archived, or only the archived ones when `archived`."""
        if limit < 1:
            raise ValueError("limit must be positive")
        below = None if cursor is None else decode_inbox_cursor(cursor, user_id)
        rows = [
            r for r in reversed(await self._inbox(user_id))
            if (r[4] is not None) == archived and (not unread or r[3] is None) and (below is None or (r[1], r[0]) < below)
        ]
        page = [InboxRow(_entry(r[2]), r[3], r[4]) for r in rows[:limit]]
        if len(rows) <= limit:
            return page, None
        return page, encode_inbox_cursor(user_id, rows[limit - 1][1], rows[limit - 1][0])

    async def inbox_unread_count(self, user_id: str) -> int:
        return sum(1 for r in await self._inbox(user_id, payloads=False) if r[3] is None and r[4] is None)

    async def daily_counts(self, date: str, channel: str) -> dict[str, int]:
        """{'sent', 'delivered', 'failed'} over the hours of a UTC date: the marks counted under it."""
        counts = {"sent": 0, "delivered": 0, "failed": 0}
        for counter, n in await self._run(_DAILY, (date, channel, _HOURS)):
            if counter in counts:
                counts[counter] += n
        return counts
