"""Deliberately broken LogStores: each is the embedded one with one mistake a LogStore backend could make.

The first ones read wrongly (cursors, delivery order, unread counts); the last ones apply a
write plan wrongly: a backend decides nothing, so each of them decides something (moves
whatever is stored, judges a move by the lifecycle, counts again, creates rows, moves a
read time, reads the timeline of every round).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from protocol.lifecycle import Status, can_advance, position
from protocol.messages import InboxEntry
from protocol.write_plan import Counter, InboxField, KeyState, StatusKey, TimelineRow, UnreadThrough, WritePlan
from reactor.backends.embedded import SqliteLogStore
from reactor.backends.embedded.log_store import _BUMP_STATS, decode_inbox_cursor, encode_cursor, encode_inbox_cursor
from reactor.ports import InboxRow, InvalidCursor, StatusRow
from tests.conformance.backends import Factory, sqlite


class HistoryCursorSkipsARow(SqliteLogStore):
    """The cursor names the first row of the next page instead of the last row of this one."""

    async def history(self, user_id: str, *, cursor: str | None = None, limit: int = 50, **filters: Any) -> tuple[list[StatusRow], str | None]:
        rows, _ = await super().history(user_id, cursor=cursor, limit=limit + 1, **filters)
        if len(rows) <= limit:
            return rows, None
        skipped = rows[limit]
        return rows[:limit], encode_cursor(user_id, skipped.created_ms, skipped.notification_id, skipped.channel)


class HistoryCursorIsAnOffset(SqliteLogStore):
    """The cursor counts the rows listed so far: a notification that arrives meanwhile shifts every page."""

    async def history(self, user_id: str, *, cursor: str | None = None, limit: int = 50, **filters: Any) -> tuple[list[StatusRow], str | None]:
        if cursor is not None and not cursor.isdigit():
            raise InvalidCursor("invalid cursor")
        start = int(cursor or 0)
        rows, _ = await super().history(user_id, limit=start + limit + 1, **filters)
        page = rows[start : start + limit]
        return page, (str(start + limit) if len(rows) > start + limit else None)


class InboxCursorRepeatsARow(SqliteLogStore):
    async def inbox_page(self, user_id: str, *, cursor: str | None = None, limit: int = 50, **kwargs: Any) -> tuple[list[InboxRow], str | None]:
        rows, next_cursor = await super().inbox_page(user_id, cursor=cursor, limit=limit, **kwargs)
        if next_cursor is not None and len(rows) >= 2:
            again = rows[-2].entry
            next_cursor = encode_inbox_cursor(user_id, again.seq, again.notification_id)
        return rows, next_cursor


class InboxCursorIsAnOffset(SqliteLogStore):
    async def inbox_page(self, user_id: str, *, cursor: str | None = None, limit: int = 50, **kwargs: Any) -> tuple[list[InboxRow], str | None]:
        if cursor is not None and not cursor.isdigit():
            raise InvalidCursor("invalid cursor")
        start = int(cursor or 0)
        rows, _ = await super().inbox_page(user_id, limit=start + limit + 1, **kwargs)
        return rows[start : start + limit], (str(start + limit) if len(rows) > start + limit else None)


class InboxCursorOfAnyUser(SqliteLogStore):
    """Takes an inbox cursor handed out for another user (a position is a position): a client's mistake goes unseen."""

    async def inbox_page(self, user_id: str, *, cursor: str | None = None, limit: int = 50, **kwargs: Any) -> tuple[list[InboxRow], str | None]:
        if cursor is not None:
            for owner in await self._read("SELECT DISTINCT user_id FROM web_inbox", ()):
                try:
                    cursor = encode_inbox_cursor(user_id, *decode_inbox_cursor(cursor, owner[0]))
                    break
                except InvalidCursor:
                    continue
        return await super().inbox_page(user_id, cursor=cursor, limit=limit, **kwargs)


class MalformedCursorIsAValueError(SqliteLogStore):
    """Refuses a malformed history cursor with a plain ValueError: the route answers InvalidCursor with a 400, this with a 500."""

    async def history(self, user_id: str, *, cursor: str | None = None, **kwargs: Any) -> tuple[list[StatusRow], str | None]:
        try:
            return await super().history(user_id, cursor=cursor, **kwargs)
        except InvalidCursor as exc:
            raise ValueError(str(exc)) from None


class InboxInIdOrder(SqliteLogStore):
    async def inbox_after(self, user_id: str, after_id: str | None, limit: int = 500) -> list[InboxEntry]:
        entries = sorted(await super().inbox_after(user_id, None, 100_000), key=lambda e: e.notification_id)
        if after_id is not None:
            entries = [e for e in entries if e.notification_id > after_id]
        return entries[:limit]


class UnknownInboxIdGivesNothing(SqliteLogStore):
    """An id the user never received is taken for the newest one: a client resuming from it misses everything."""

    async def inbox_after(self, user_id: str, after_id: str | None, limit: int = 500) -> list[InboxEntry]:
        if after_id is not None and await self.inbox_get(user_id, after_id) is None:
            return []
        return await super().inbox_after(user_id, after_id, limit)


class RedeliveredInboxEntryResetsItsState(SqliteLogStore):
    """Upserts inbox entries: a redelivery after the user read it makes it unread again."""

    async def apply(self, plan: WritePlan) -> None:
        await super().apply(plan)
        await self._write(lambda db: db.executemany(
            "UPDATE web_inbox SET read_ms = NULL, archived_ms = NULL, payload = ? WHERE user_id = ? AND notification_id = ?",
            [(msgspec.json.encode(i), i.user_id, i.notification_id) for i in plan.inbox]))


class UnreadCountsArchivedEntries(SqliteLogStore):
    async def inbox_unread_count(self, user_id: str) -> int:
        rows = await self._read("SELECT COUNT(*) FROM web_inbox WHERE user_id = ? AND read_ms IS NULL", (user_id,))
        return int(rows[0][0])


class ReadAllMarksArchivedEntries(SqliteLogStore):
    """Lists archived entries among the unread ones a read-all marks: it marks what the unread count does not count."""

    async def inbox_unread(self, user_id: str, through_id: str | None = None) -> UnreadThrough:
        found = await super().inbox_unread(user_id, through_id)
        archived = [r.entry.notification_id for r in (await self.inbox_page(user_id, archived=True, unread=True, limit=1000))[0]]
        return msgspec.structs.replace(found, ids=(*archived, *found.ids))


async def stored_states(store: SqliteLogStore, plan: WritePlan) -> dict[StatusKey, KeyState]:
    """The stored state of the keys a plan moves (a broken backend deciding from it)."""
    found = await store.key_states([(m.notification_id, m.channel) for m in plan.moves])
    return {(k.notification_id, k.channel): k for k in found}


class MoveIgnoresItsGuard(SqliteLogStore):
    """Last write wins: a move applies whatever step is stored (a stale or repeated move takes the status back)."""

    async def apply(self, plan: WritePlan) -> None:
        stored = await stored_states(self, plan)
        moves = tuple(
            msgspec.structs.replace(m, after=m.after | {position(k.round, k.status)})
            if (k := stored.get((m.notification_id, m.channel))) else m
            for m in plan.moves
        )
        await super().apply(msgspec.structs.replace(plan, moves=moves))


class MoveJudgedByTheLifecycle(SqliteLogStore):
    """Checks each move against the lifecycle itself and drops those it finds illegal (so it refuses the replay edge)."""

    async def apply(self, plan: WritePlan) -> None:
        stored = await stored_states(self, plan)
        moves = tuple(
            m for m in plan.moves
            if (k := stored.get((m.notification_id, m.channel))) is None or can_advance(k.status, m.status)
        )
        await super().apply(msgspec.structs.replace(plan, moves=moves))


class CountsOnEveryApply(SqliteLogStore):
    """Counts every CountOnce it is given, each time, whether its move applies or not (no mark per transition)."""

    async def apply(self, plan: WritePlan) -> None:
        await super().apply(msgspec.structs.replace(plan, counts=()))
        bumps = [(c.date, c.channel, c.hour, *(int(c.counter is k) for k in Counter)) for c in plan.counts]
        await self._write(lambda db: db.executemany(_BUMP_STATS, bumps))


class MoveCreatesAMissingRow(SqliteLogStore):
    """Upserts every move: one that may not create its row (a client's ack of an unknown notification) creates it."""

    async def apply(self, plan: WritePlan) -> None:
        creating = tuple(msgspec.structs.replace(m, create=True) for m in plan.moves)
        await super().apply(msgspec.structs.replace(plan, moves=creating))


class InboxTimeOverwritten(SqliteLogStore):
    """Sets a read or archived time even where one is set: a second read moves the first read time."""

    async def apply(self, plan: WritePlan) -> None:
        await super().apply(plan)
        column = {InboxField.READ: "read_ms", InboxField.ARCHIVED: "archived_ms"}
        for t in plan.inbox_times:
            await self._write(lambda db, t=t: db.execute(
                f"UPDATE web_inbox SET {column[t.field]} = ? WHERE user_id = ? AND notification_id = ?",
                (t.at_ms, t.user_id, t.notification_id)))


class TimelineOfEveryRound(SqliteLogStore):
    """Gives the planner the timeline of every round, not only the current one's."""

    async def key_states(self, keys: Sequence[StatusKey], *, timeline: bool = False) -> list[KeyState]:
        found = await super().key_states(keys, timeline=timeline)
        if not timeline:
            return found
        out = []
        for k in found:
            rows = await self._read(
                "SELECT step, status, detail, at_ms FROM notification_events WHERE notification_id = ? AND channel = ?",
                (k.notification_id, k.channel),
            )
            every = tuple(TimelineRow(step, Status(status), detail, at) for step, status, detail, at in rows)
            out.append(msgspec.structs.replace(k, timeline=every))
        return out


class AcknowledgesJoinersEarly(SqliteLogStore):
    """Batches concurrent plans, but answers a plan that arrives while a batch is being written at once, and
    writes it with the next apply: alone (every check but the concurrent one) it is right; the last joiners are lost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._late: list[WritePlan] = []
        self._writing = False

    async def apply(self, plan: WritePlan) -> None:
        if self._writing:
            self._late.append(plan)  # acknowledged before it is durable
            return
        self._writing = True
        try:
            late, self._late = self._late, []
            for each in [*late, plan]:
                await super().apply(each)
        finally:
            self._writing = False


class FreshKeysNotChecked(SqliteLogStore):
    """Applies a plan whatever its fresh keys hold: a fresh guess that was wrong (a retry's id, stored) lands."""

    async def apply(self, plan: WritePlan) -> None:
        await super().apply(msgspec.structs.replace(plan, fresh=()))


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: sqlite(kind, "logs.sqlite3")
    for kind in (
        HistoryCursorSkipsARow, HistoryCursorIsAnOffset, InboxCursorRepeatsARow, InboxCursorIsAnOffset, InboxCursorOfAnyUser,
        MalformedCursorIsAValueError, InboxInIdOrder,
        UnknownInboxIdGivesNothing, RedeliveredInboxEntryResetsItsState, UnreadCountsArchivedEntries, ReadAllMarksArchivedEntries,
        MoveIgnoresItsGuard, MoveJudgedByTheLifecycle, CountsOnEveryApply, MoveCreatesAMissingRow, InboxTimeOverwritten,
        TimelineOfEveryRound, AcknowledgesJoinersEarly, FreshKeysNotChecked,
    )
}

# The checks each variant was written against: each of them must catch it (test_catches_broken.py).
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "InboxCursorOfAnyUser": ("a_cursor_is_its_users_and_its_listings_own",),
    "MalformedCursorIsAValueError": ("history_refuses_a_malformed_cursor",),
    "RedeliveredInboxEntryResetsItsState": (
        "a_redelivered_inbox_entry_keeps_the_first_and_its_read_state", "the_inbox_is_written_once",
    ),
    "ReadAllMarksArchivedEntries": ("read_archive_and_unread_count",),
    "MoveIgnoresItsGuard": ("a_move_applies_only_from_its_guard",),
    "MoveJudgedByTheLifecycle": ("a_move_is_applied_as_stated",),
    "CountsOnEveryApply": ("a_transition_counts_once", "a_plan_applied_again_changes_nothing"),
    "MoveCreatesAMissingRow": ("a_move_applies_only_from_its_guard",),
    "InboxTimeOverwritten": ("the_inbox_is_written_once",),
    "TimelineOfEveryRound": ("key_states_read_what_was_applied",),
    "AcknowledgesJoinersEarly": ("concurrent_plans_are_each_there_once_acknowledged",),
    "FreshKeysNotChecked": ("a_plan_with_a_stored_fresh_key_applies_nothing",),
}
