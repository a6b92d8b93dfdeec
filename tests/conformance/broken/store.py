"""Deliberately broken Stores: each is the embedded one with one mistake a Store backend could make."""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

import trio

from reactor.backends.embedded import SqliteStore
from reactor.backends.embedded.sqlite import SqliteBacked
from reactor.backends.embedded.store import _DLQ_COLUMNS, _dead_letter, _migrate_scheduled, _where
from reactor.ports import DeadLetter, DlqFilter, Scheduled
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


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: sqlite(kind, "store.sqlite3")
    for kind in (
        KeepsTwoDeadLettersOfADelivery, ReplacesADeadLetterInPlace, PagesRepeatTheCursorsEntry, BeforeIsInclusive, NoIdsMeansEveryId,
        ResolvesEveryChannel, DiscardCountsWhatWasAsked, SchedulingAgainKeepsTheFirstEntry, ScheduledInIdOrder,
        ScheduledEntriesOnlyInMemory, LedgerTakesTheLastStatus, LedgerWritesBehind, LedgerIgnoresTheChannel, RacyMetaPut,
        HandsOutLeasedEntries, ClaimsInTwoSteps, NextDueIgnoresLeases,
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
}
