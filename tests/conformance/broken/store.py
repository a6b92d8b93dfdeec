"""Deliberately broken Stores: each is the embedded one with one mistake a Store backend could make."""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

import trio

from reactor.backends.embedded import SqliteStore
from reactor.backends.embedded.sqlite import SqliteBacked
from reactor.backends.embedded.store import _DLQ_COLUMNS, _dead_letter, _migrate_scheduled, _where
from reactor.ports import DeadLetter, DigestEvent, DlqFilter, FanoutJob, Scheduled
from tests.conformance.backends import Factory, sqlite


class KeepsTwoDeadLettersOfADelivery(SqliteStore):
    async def open(self) -> None:
        await SqliteBacked.open(self)  # without the unique index on (notification_id, channel)
        await self._run(_migrate_scheduled)  # but with the claims' indexes


class ReplacesADeadLetterInPlace(SqliteStore):
    """Keeps the old id: a replay that read the old entry then discards the new one."""

    async def dead_letter(self, entry: DeadLetter) -> int:
        def put(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT id FROM dead_letters WHERE notification_id = ? AND channel = ?",
                             (entry.notification_id, entry.channel)).fetchone()
            if row is None:
                return -1
            db.execute("UPDATE dead_letters SET error = ?, attempts = ?, dead_ms = ?, record = ? WHERE id = ?",
                       (entry.error, entry.attempts, entry.dead_ms, entry.record, row[0]))
            return int(row[0])

        found = await self._run(put)
        return found if found >= 0 else await super().dead_letter(entry)


class PagesRepeatTheCursorsEntry(SqliteStore):
    async def dead_letters(self, selection: DlqFilter, after_id: int = 0, limit: int = 100) -> list[DeadLetter]:
        where, params = _where(selection)
        where = f"{where} AND id >= ?" if where else " WHERE id >= ?"
        sql = f"SELECT {_DLQ_COLUMNS} FROM dead_letters{where} ORDER BY id LIMIT ?"
        return [_dead_letter(r) for r in await self._run(lambda db: db.execute(sql, (*params, after_id, limit)).fetchall())]


class BeforeIsInclusive(SqliteStore):
    async def dead_letters(self, selection: DlqFilter, after_id: int = 0, limit: int = 100) -> list[DeadLetter]:
        if selection.before_ms is not None:
            selection = DlqFilter(selection.ids, selection.channel, selection.notification_id, selection.before_ms + 1)
        return await super().dead_letters(selection, after_id, limit)


class NoIdsMeansEveryId(SqliteStore):
    async def dead_letters(self, selection: DlqFilter, after_id: int = 0, limit: int = 100) -> list[DeadLetter]:
        if selection.ids == ():
            selection = DlqFilter(None, selection.channel, selection.notification_id, selection.before_ms)
        return await super().dead_letters(selection, after_id, limit)


class ResolvesEveryChannel(SqliteStore):
    async def resolve_dead_letters(self, channel: str, notification_ids: Sequence[str]) -> list[str]:
        found = await super().resolve_dead_letters(channel, notification_ids)
        await self._run(lambda db: db.executemany("DELETE FROM dead_letters WHERE notification_id = ?", [(n,) for n in found]))
        return found


class DiscardCountsWhatWasAsked(SqliteStore):
    async def discard_dead_letters(self, ids: Sequence[int]) -> int:
        await super().discard_dead_letters(ids)
        return len(ids)


class SchedulingAgainKeepsTheFirstEntry(SqliteStore):
    async def schedule(self, entry: Scheduled) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR IGNORE INTO scheduled (id, due_ms, topic, key, value) VALUES (?, ?, ?, ?, ?)",
            (entry.id, entry.due_ms, entry.topic, entry.key, entry.value),
        ))


class ScheduledInIdOrder(SqliteStore):
    async def scheduled(self) -> list[Scheduled]:
        return sorted(await super().scheduled(), key=lambda e: e.id)


class ScheduledEntriesOnlyInMemory(SqliteStore):
    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self._entries: dict[str, Scheduled] = {}

    async def schedule(self, entry: Scheduled) -> None:
        self._entries[entry.id] = entry

    async def unschedule(self, ids: Sequence[str]) -> None:
        for i in ids:
            self._entries.pop(i, None)

    async def scheduled(self) -> list[Scheduled]:
        return sorted(self._entries.values(), key=lambda e: e.due_ms)


class LedgerTakesTheLastStatus(SqliteStore):
    async def mark_sent(self, notification_id: str, channel: str, status: str, at_ms: int) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO send_ledger (notification_id, channel, at_ms, status) VALUES (?, ?, ?, ?)",
            (notification_id, channel, at_ms, status),
        ))


class LedgerWritesBehind(SqliteStore):
    """Acknowledges a ledger write at once and makes it with the next one (a write-behind buffer): the last one is lost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._behind: list[tuple[str, str, str, int]] = []

    async def mark_sent(self, notification_id: str, channel: str, status: str, at_ms: int) -> None:
        pending, self._behind = self._behind, [(notification_id, channel, status, at_ms)]
        for entry in pending:
            await super().mark_sent(*entry)


class LedgerBatchTakesTheLastStatus(SqliteStore):
    """Writes a batch of marks with INSERT OR REPLACE: a second send's status replaces the first one's."""

    async def mark_sent_many(self, marks: Sequence[tuple[str, str, str, int]]) -> None:
        rows = [(n, c, at_ms, status) for n, c, status, at_ms in marks]
        await self._run(lambda db: db.executemany(
            "INSERT OR REPLACE INTO send_ledger (notification_id, channel, at_ms, status) VALUES (?, ?, ?, ?)", rows))


class LedgerBatchLosesItsLastMark(SqliteStore):
    """Acknowledges a batch of marks with its last one not written (held for a next write that may never come)."""

    async def mark_sent_many(self, marks: Sequence[tuple[str, str, str, int]]) -> None:
        await super().mark_sent_many(list(marks)[:-1])


class LedgerIgnoresTheChannel(SqliteStore):
    async def sent_status(self, notification_id: str, channel: str) -> str | None:
        row = await self._run(lambda db: db.execute(
            "SELECT status FROM send_ledger WHERE notification_id = ? ORDER BY at_ms LIMIT 1", (notification_id,)).fetchone())
        return None if row is None else str(row[0])


class RacyMetaPut(SqliteStore):
    """Reads, makes a round trip, then writes: two callers can both think they stored their value."""

    async def put_meta_if_absent(self, key: str, value: str) -> str:
        existing = await self.get_meta(key)
        if existing is not None:
            return existing
        await trio.lowlevel.checkpoint()
        await self._run(lambda db: db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)))
        return value


# -- the Scheduler's claims ---------------------------------------------------------------


class HandsOutLeasedEntries(SqliteStore):
    """Forgets the lease when it claims: a second claimer gets what the first one holds."""

    async def claim_due(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[Scheduled]:
        def claim(db: sqlite3.Connection) -> list[Scheduled]:
            rows = db.execute(
                "SELECT id, due_ms, topic, key, value FROM scheduled WHERE due_ms <= ? ORDER BY due_ms, id LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            return [Scheduled(r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in rows]

        return await self._transaction(claim)


class ClaimsInTwoSteps(SqliteStore):
    """Reads the claimable entries, then leases them in a second call: two claimers can read the same ones in between."""

    async def claim_due(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[Scheduled]:
        found = await self._run(lambda db: db.execute(
            "SELECT id, due_ms, topic, key, value FROM scheduled WHERE due_ms <= ? AND (lease_until <= ? OR owner = ?)"
            " ORDER BY due_ms, id LIMIT ?", (now_ms, now_ms, owner, limit),
        ).fetchall())
        await trio.lowlevel.checkpoint()
        await self._run(lambda db: db.executemany(
            "UPDATE scheduled SET owner = ?, lease_until = ? WHERE id = ?", [(owner, now_ms + lease_ms, r[0]) for r in found]
        ))
        return [Scheduled(r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in found]


class NextDueIgnoresLeases(SqliteStore):
    """Reports a leased entry's due time: a claimer would wake, find nothing, and spin until the lease ends."""

    async def next_due_ms(self) -> int | None:
        row = await self._run(lambda db: db.execute("SELECT min(due_ms) FROM scheduled").fetchone())
        return None if row[0] is None else int(row[0])


# -- topics and fan-out jobs ------------------------------------------------------------------


class SkipsARowAtAPageBoundary(SqliteStore):
    """Pages with OFFSET 1 past the cursor, as if the cursor's own row were in the range: the first row of each later page is lost."""

    async def subscribers(self, topic: str, after: str, limit: int) -> list[str]:
        rows = await self._run(lambda db: db.execute(
            "SELECT user_id FROM topic_subscribers WHERE topic = ? AND user_id > ? ORDER BY user_id LIMIT ? OFFSET ?",
            (topic, after, limit, 1 if after else 0),
        ).fetchall())
        return [str(r[0]) for r in rows]


class DeleteLeavesARow(SqliteStore):
    """Removes the ids one statement each but stops at the first that was not subscribed."""

    async def remove_subscribers(self, topic: str, user_ids: Sequence[str]) -> int:
        def remove(db: sqlite3.Connection) -> int:
            removed = 0
            for user in user_ids:
                count = db.execute("DELETE FROM topic_subscribers WHERE topic = ? AND user_id = ?", (topic, user)).rowcount
                if count == 0:
                    break
                removed += count
            return removed

        return await self._transaction(remove)


class CountsRepeatedSubscribers(SqliteStore):
    async def add_subscribers(self, topic: str, user_ids: Sequence[str]) -> int:
        await super().add_subscribers(topic, user_ids)
        return len(user_ids)


class ClaimsALeasedFanout(SqliteStore):
    """Forgets the lease: two workers expand one topic send at once."""

    async def claim_fanout(self, owner: str, now_ms: int, lease_ms: int) -> FanoutJob | None:
        await self._run(lambda db: db.execute("UPDATE fanouts SET lease_until = 0"))
        return await super().claim_fanout(owner, now_ms, lease_ms)


class CheckpointIgnoresTheOwner(SqliteStore):
    """A worker whose lease was taken over still writes its checkpoint: the new owner's progress goes back or forth."""

    async def checkpoint_fanout(self, owner: str, job: FanoutJob, now_ms: int, lease_ms: int) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            db.execute("UPDATE fanouts SET cursor = ?, expanded = ?, counts = ?, done_ms = ? WHERE id = ?",
                       (job.cursor, job.expanded, job.counts, job.done_ms, job.id))
            return True

        return await self._transaction(write)


class CancelsClaimedEntries(SqliteStore):
    """Cancels whatever is pending, claimed or not: an entry being produced is cancelled too (sent and cancelled both)."""

    async def cancel_scheduled(self, notification_id: str, channel: str, id_prefixes: Sequence[str], at_ms: int) -> bool:
        def cancel(db: sqlite3.Connection) -> bool:
            removed = sum(db.execute("DELETE FROM scheduled WHERE id >= ? AND id < ?", (p, p + "\U0010ffff")).rowcount
                          for p in id_prefixes)
            if removed:
                db.execute("INSERT OR IGNORE INTO send_ledger VALUES (?, ?, ?, 'cancelled')", (notification_id, channel, at_ms))
            return removed > 0

        return await self._transaction(cancel)


class DigestDueIgnoresTheDeadline(SqliteStore):
    """A later event's due time replaces the window's, past the opening event's deadline: a busy sliding window never fires."""

    async def add_digest_event(self, event: DigestEvent, due_ms: int, deadline_ms: int, max_events: int) -> None:
        await super().add_digest_event(event, due_ms, deadline_ms, max_events)
        await self._run(lambda db: db.execute(
            "UPDATE digests SET due_ms = ? WHERE user_id = ? AND digest_key = ? AND fire_id = '' AND count > 1",
            (due_ms, event.user_id, event.digest_key),
        ))


class DigestClaimLeavesLaterEventsIn(SqliteStore):
    """Closes a window by its due time only: an event added after the claim joins the window being fired,
    and is removed with it when it finishes, never sent."""

    async def add_digest_event(self, event: DigestEvent, due_ms: int, deadline_ms: int, max_events: int) -> None:
        def add(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT fire_id FROM digests WHERE user_id = ? AND digest_key = ?", (event.user_id, event.digest_key)).fetchone()
            if row is None or row[0] == "":
                return None
            db.execute("INSERT OR IGNORE INTO digest_events (notification_id, user_id, digest_key, fire_id, at_ms, body) VALUES (?, ?, ?, ?, ?, ?)",
                       (event.notification_id, event.user_id, event.digest_key, row[0], event.at_ms, event.body))
            db.execute("UPDATE digests SET count = count + 1 WHERE user_id = ? AND digest_key = ? AND fire_id = ?", (event.user_id, event.digest_key, row[0]))
            return None

        if await self._transaction(lambda db: db.execute(
            "SELECT 1 FROM digests WHERE user_id = ? AND digest_key = ? AND fire_id <> ''", (event.user_id, event.digest_key)
        ).fetchone()) is None:
            await super().add_digest_event(event, due_ms, deadline_ms, max_events)
        else:
            await self._transaction(add)


class DigestWindowsHaveNoMaximum(SqliteStore):
    """Ignores max_events: a window collects without bound until its time comes (a claim loads it whole)."""

    async def add_digest_event(self, event: DigestEvent, due_ms: int, deadline_ms: int, max_events: int) -> None:
        await super().add_digest_event(event, due_ms, deadline_ms, 10**9)


class DigestCancelTakesClaimedEvents(SqliteStore):
    """Cancels an event whether or not its window was claimed: the digest being fired carries it, and it is cancelled too."""

    async def cancel_digest_event(self, notification_id: str, channels: Sequence[str], at_ms: int) -> bool:
        def cancel(db: sqlite3.Connection) -> bool:
            removed = db.execute("DELETE FROM digest_events WHERE notification_id = ?", (notification_id,)).rowcount
            db.executemany("INSERT OR IGNORE INTO send_ledger VALUES (?, ?, ?, 'cancelled')", [(notification_id, c, at_ms) for c in channels])
            return removed > 0 or bool(channels)

        return await self._transaction(cancel)


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: sqlite(kind, "store.sqlite3")
    for kind in (
        KeepsTwoDeadLettersOfADelivery, ReplacesADeadLetterInPlace, PagesRepeatTheCursorsEntry, BeforeIsInclusive, NoIdsMeansEveryId,
        ResolvesEveryChannel, DiscardCountsWhatWasAsked, SchedulingAgainKeepsTheFirstEntry, ScheduledInIdOrder,
        ScheduledEntriesOnlyInMemory, LedgerTakesTheLastStatus, LedgerWritesBehind, LedgerIgnoresTheChannel, RacyMetaPut,
        LedgerBatchTakesTheLastStatus, LedgerBatchLosesItsLastMark,
        HandsOutLeasedEntries, ClaimsInTwoSteps, NextDueIgnoresLeases,
        SkipsARowAtAPageBoundary, DeleteLeavesARow, CountsRepeatedSubscribers, ClaimsALeasedFanout, CheckpointIgnoresTheOwner,
        CancelsClaimedEntries, DigestDueIgnoresTheDeadline, DigestClaimLeavesLaterEventsIn, DigestCancelTakesClaimedEvents,
        DigestWindowsHaveNoMaximum,
    )
}

# The checks each variant was written against: each of them must catch it (test_catches_broken.py).
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "HandsOutLeasedEntries": (
        "a_leased_entry_goes_to_no_other_owner_until_the_lease_ends", "concurrent_claimers_never_get_one_entry_twice",
    ),
    "ClaimsInTwoSteps": ("concurrent_claimers_never_get_one_entry_twice",),
    "NextDueIgnoresLeases": ("next_due_counts_the_end_of_a_lease",),
    "LedgerWritesBehind": ("concurrent_ledger_writes_are_each_there_once_acknowledged",),
    "LedgerBatchTakesTheLastStatus": ("a_batch_of_ledger_marks_is_there_once_acknowledged_and_keeps_the_first_status",),
    "LedgerBatchLosesItsLastMark": ("a_batch_of_ledger_marks_is_there_once_acknowledged_and_keeps_the_first_status",),
    "SkipsARowAtAPageBoundary": ("subscribers_page_by_user_id_each_once",),
    "DeleteLeavesARow": ("unsubscribe_removes_exactly_those_users",),
    "CountsRepeatedSubscribers": ("subscribers_page_by_user_id_each_once",),
    "ClaimsALeasedFanout": ("fanout_jobs_are_claimed_oldest_first_by_one_owner_at_a_time",),
    "CheckpointIgnoresTheOwner": ("a_checkpoint_is_kept_only_for_the_jobs_owner",),
    "CancelsClaimedEntries": ("a_cancel_removes_unclaimed_entries_and_never_a_claimed_one",),
    "DigestDueIgnoresTheDeadline": ("digest_events_collect_into_one_window_per_user_and_key",),
    "DigestWindowsHaveNoMaximum": ("a_full_digest_window_is_due_at_once",),
    "DigestClaimLeavesLaterEventsIn": ("a_due_window_is_claimed_once_closed_and_a_later_event_opens_the_next",),
    "DigestCancelTakesClaimedEvents": (
        "a_cancel_takes_an_event_out_of_an_open_window_and_never_out_of_a_claimed_one",
        "cancels_racing_digest_claims_end_each_event_cancelled_or_fired_never_both",
    ),
}
