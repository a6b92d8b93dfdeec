"""The embedded Store backend: SQLite (WAL, synchronous=FULL).

It holds what must survive a restart besides the bus and the delivery log: metadata,
the Scheduler's pending retries, the dead-letter queue and the send ledger. No secret:
the token-signing keys have a port of their own (SigningKeyStore; embedded: signing_keys.py), the bootstrap
API key is a hashed entry of the KeyStore. A data dir from before that kept both here in
clear; `forget_meta` erases them once moved (actors/services/credentials.py).
Every write is durable when the call returns. The writes of the delivery path (the send
ledger, the Scheduler's entries, dead letters) group-commit: concurrent callers share one
transaction and one fsync (sqlite.py, `_grouped`); the ledger's and the queue's reads run on
read connections, so they do not wait behind a write.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence, TypeVar

from reactor.ports import DeadLetter, DigestEvent, DigestFire, DigestWindow, DlqFilter, FanoutJob, Scheduled

from .sqlite import SqliteBacked

T = TypeVar("T")
CANCELLED = "cancelled"  # the send ledger's status of a (notification, channel) cancelled while the Store held it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scheduled (
    id TEXT PRIMARY KEY,
    due_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    dead_ms INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_channel ON dead_letters (channel, id);
CREATE TABLE IF NOT EXISTS send_ledger (
    notification_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (notification_id, channel)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topic_subscribers (
    topic TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (topic, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fanouts (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    request BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    total INTEGER NOT NULL,
    cursor TEXT NOT NULL DEFAULT '',
    expanded INTEGER NOT NULL DEFAULT 0,
    counts BLOB NOT NULL DEFAULT X'7B7D',
    done_ms INTEGER,
    owner TEXT NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS fanouts_open ON fanouts (created_ms, id) WHERE done_ms IS NULL;
CREATE TABLE IF NOT EXISTS digests (
    user_id TEXT NOT NULL,
    digest_key TEXT NOT NULL,
    fire_id TEXT NOT NULL DEFAULT '',
    due_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, digest_key, fire_id)
);
CREATE INDEX IF NOT EXISTS digests_open_by_due ON digests (due_ms) WHERE fire_id = '';
CREATE INDEX IF NOT EXISTS digests_closed_by_lease ON digests (lease_until) WHERE fire_id <> '';
CREATE TABLE IF NOT EXISTS digest_events (
    notification_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    digest_key TEXT NOT NULL,
    fire_id TEXT NOT NULL DEFAULT '',
    at_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS digest_events_by_window ON digest_events (user_id, digest_key, fire_id, at_ms, notification_id);
"""


def _where(selection: DlqFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if selection.ids is not None:
        clauses.append(f"id IN ({','.join('?' * len(selection.ids))})" if selection.ids else "0")
        params.extend(selection.ids)
    if selection.channel is not None:
        clauses.append("channel = ?")
        params.append(selection.channel)
    if selection.notification_id is not None:
        clauses.append("notification_id = ?")
        params.append(selection.notification_id)
    if selection.before_ms is not None:
        clauses.append("dead_ms < ?")
        params.append(selection.before_ms)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=row[0], channel=row[1], notification_id=row[2], user_id=row[3], error=row[4],
        attempts=row[5], created_ms=row[6], dead_ms=row[7], record=bytes(row[8]),
    )


_DLQ_COLUMNS = "id, channel, notification_id, user_id, error, attempts, created_ms, dead_ms, record"


# One entry per (notification, channel). A queue from before this index keeps its newest entry of each.
_DLQ_ONCE = """
DELETE FROM dead_letters WHERE id NOT IN (SELECT max(id) FROM dead_letters GROUP BY notification_id, channel);
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (notification_id, channel);
"""


def _migrate_dead_letters(db: sqlite3.Connection) -> None:
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'dead_letters_once'").fetchone() is None:
        db.executescript(f"BEGIN IMMEDIATE; {_DLQ_ONCE} COMMIT;")


# The Scheduler's claims: a lease per entry (owner, lease_until: 0 when never leased). The due index
# serves claims and the next due time of the entries not leased; the partial index holds only the
# leased ones (a few batches), so the next lease end is read without a scan.
_CLAIM_INDEXES = """
CREATE INDEX IF NOT EXISTS scheduled_by_due ON scheduled (due_ms, id);
CREATE INDEX IF NOT EXISTS scheduled_leased ON scheduled (lease_until) WHERE lease_until > 0;
"""


def _migrate_scheduled(db: sqlite3.Connection) -> None:
    """Add the lease columns to a store from before claims (its entries: never leased), then the indexes."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(scheduled)")}
    if "lease_until" not in columns:
        db.executescript(
            "BEGIN IMMEDIATE;"
            " ALTER TABLE scheduled ADD COLUMN owner TEXT NOT NULL DEFAULT '';"
            " ALTER TABLE scheduled ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;"
            " COMMIT;"
        )
    db.executescript(_CLAIM_INDEXES)


def _scheduled(row: tuple[Any, ...]) -> Scheduled:
    return Scheduled(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]))


_FANOUT_COLUMNS = "id, topic, request, created_ms, total, cursor, expanded, counts, done_ms"


_WINDOW_COLUMNS = "user_id, digest_key, fire_id, due_ms, deadline_ms, count, first_ms, last_ms"
_EVENT_COLUMNS = "notification_id, user_id, digest_key, at_ms, body"


def _window(row: tuple[Any, ...]) -> DigestWindow:
    return DigestWindow(*row[:8])


def _event(row: tuple[Any, ...]) -> DigestEvent:
    return DigestEvent(row[0], row[1], row[2], row[3], bytes(row[4]))


def _fanout(row: tuple[Any, ...]) -> FanoutJob:
    return FanoutJob(row[0], row[1], bytes(row[2]), row[3], row[4], row[5], row[6], bytes(row[7]), row[8])



class SqliteStore(SqliteBacked):
    SCHEMA = _SCHEMA
    READERS = 2

    async def open(self) -> None:
        await super().open()
        await self._run(_migrate_dead_letters)
        await self._run(_migrate_scheduled)

    # -- metadata

    async def get_meta(self, key: str) -> str | None:
        row = await self._run(lambda db: db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone())
        return None if row is None else str(row[0])

    async def put_meta_if_absent(self, key: str, value: str) -> str:
        def put(db: sqlite3.Connection) -> str:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return str(db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

        return await self._transaction(put)

    async def forget_meta(self, key: str) -> None:
        def forget(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM meta WHERE key=?", (key,)).fetchone() is None:
                return
            # zero the freed bytes, then fold the WAL (which held older copies of the page) into the file and empty it
            db.execute("PRAGMA secure_delete=ON")
            try:
                db.execute("DELETE FROM meta WHERE key=?", (key,))
            finally:
                db.execute("PRAGMA secure_delete=OFF")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        await self._run(forget)

    # -- the Scheduler's pending work

    async def schedule(self, entry: Scheduled) -> None:
        await self._grouped(lambda db: db.execute(
            "INSERT OR REPLACE INTO scheduled (id, due_ms, topic, key, value) VALUES (?, ?, ?, ?, ?)",
            (entry.id, entry.due_ms, entry.topic, entry.key, entry.value),
        ))

    async def unschedule(self, ids: Sequence[str]) -> None:
        # one transaction (one commit, one fsync) for the batch, not one per entry
        await self._transaction(lambda db: db.executemany("DELETE FROM scheduled WHERE id = ?", [(i,) for i in ids]))

    async def scheduled(self) -> list[Scheduled]:
        sql = "SELECT id, due_ms, topic, key, value FROM scheduled ORDER BY due_ms, id"
        rows = await self._run(lambda db: db.execute(sql).fetchall())
        return [_scheduled(r) for r in rows]

    async def claim_due(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[Scheduled]:
        def claim(db: sqlite3.Connection) -> list[Scheduled]:
            # walks the due index from the earliest entry; the leased ones it skips are a few batches at most
            rows = db.execute(
                "SELECT id, due_ms, topic, key, value FROM scheduled INDEXED BY scheduled_by_due"
                " WHERE due_ms <= ? AND (lease_until <= ? OR owner = ?) ORDER BY due_ms, id LIMIT ?",
                (now_ms, now_ms, owner, limit),
            ).fetchall()
            db.executemany(
                "UPDATE scheduled SET owner = ?, lease_until = ? WHERE id = ?", [(owner, now_ms + lease_ms, r[0]) for r in rows]
            )
            return [_scheduled(r) for r in rows]

        return await self._transaction(claim)  # BEGIN IMMEDIATE: one claimer at a time, on this file, from any process

    async def cancel_scheduled(self, notification_id: str, channel: str, id_prefixes: Sequence[str], at_ms: int) -> bool:
        def cancel(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT status FROM send_ledger WHERE notification_id = ? AND channel = ?", (notification_id, channel)
            ).fetchone()
            if row is not None:
                return str(row[0]) == CANCELLED
            held: list[tuple[str, int]] = []
            for prefix in id_prefixes:  # a range of the primary key: ids starting with the prefix
                held += db.execute(
                    "SELECT id, lease_until FROM scheduled WHERE id >= ? AND id < ?", (prefix, prefix + "\U0010ffff")
                ).fetchall()
            if not held or any(lease_until > 0 for _, lease_until in held):
                return False
            db.executemany("DELETE FROM scheduled WHERE id = ?", [(i,) for i, _ in held])
            db.execute(
                "INSERT INTO send_ledger (notification_id, channel, at_ms, status) VALUES (?, ?, ?, ?)",
                (notification_id, channel, at_ms, CANCELLED),
            )
            return True

        return await self._transaction(cancel)  # BEGIN IMMEDIATE: serialized with claim_due on this file

    async def next_due_ms(self) -> int | None:
        def earliest(db: sqlite3.Connection) -> int | None:
            free = db.execute(
                "SELECT due_ms FROM scheduled INDEXED BY scheduled_by_due WHERE lease_until = 0 ORDER BY due_ms LIMIT 1"
            ).fetchone()
            leased = db.execute("SELECT min(max(due_ms, lease_until)) FROM scheduled WHERE lease_until > 0").fetchone()
            times = [int(t) for t in (free[0] if free else None, leased[0]) if t is not None]
            return min(times) if times else None

        return await self._run(earliest)

    # -- the dead-letter queue

    async def dead_letter(self, entry: DeadLetter) -> int:
        # REPLACE deletes the earlier entry of the same (notification, channel) and inserts this one
        # under a new id: a replay in flight, which discards the old id, cannot discard this one.
        def put(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT OR REPLACE INTO dead_letters (channel, notification_id, user_id, error, attempts, created_ms, dead_ms, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.channel, entry.notification_id, entry.user_id, entry.error, entry.attempts,
                 entry.created_ms, entry.dead_ms, entry.record),
            )
            return int(cursor.lastrowid or 0)

        return await self._grouped(put)

    async def dead_letters(self, selection: DlqFilter, after_id: int = 0, limit: int = 100) -> list[DeadLetter]:
        where, params = _where(selection)
        where = f"{where} AND id > ?" if where else " WHERE id > ?"
        sql = f"SELECT {_DLQ_COLUMNS} FROM dead_letters{where} ORDER BY id LIMIT ?"
        rows = await self._read(lambda db: db.execute(sql, (*params, after_id, limit)).fetchall())
        return [_dead_letter(r) for r in rows]

    async def discard_dead_letters(self, ids: Sequence[int]) -> int:
        def delete(db: sqlite3.Connection) -> int:
            return sum(db.execute("DELETE FROM dead_letters WHERE id = ?", (i,)).rowcount for i in ids)

        return await self._transaction(delete)

    async def resolve_dead_letters(self, channel: str, notification_ids: Sequence[str]) -> list[str]:
        wanted = sorted(set(notification_ids))

        def resolve(db: sqlite3.Connection) -> list[str]:
            found: list[str] = []
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT notification_id FROM dead_letters WHERE channel = ? AND notification_id IN ({marks})"
                found += [str(r[0]) for r in db.execute(sql, (channel, *chunk))]
            if found:  # a write only when there is something to resolve: the common case reads one index
                db.executemany("DELETE FROM dead_letters WHERE channel = ? AND notification_id = ?", [(channel, n) for n in found])
            return found

        return await self._transaction(resolve)

    async def dead_letter_count(self, channel: str | None = None) -> int:
        where, params = _where(DlqFilter(channel=channel))
        row = await self._read(lambda db: db.execute(f"SELECT count(*) FROM dead_letters{where}", params).fetchone())
        return int(row[0])

    # -- the send ledger

    # -- digests (reactor/ports.py Store; actors/digester.py)

    async def add_digest_event(self, event: DigestEvent, due_ms: int, deadline_ms: int, max_events: int) -> None:
        def add(db: sqlite3.Connection) -> None:
            added = db.execute(
                f"INSERT INTO digest_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (notification_id) DO NOTHING",
                (event.notification_id, event.user_id, event.digest_key, event.at_ms, event.body),
            ).rowcount
            if added:
                db.execute(
                    f"INSERT INTO digests ({_WINDOW_COLUMNS}) VALUES (?, ?, '', ?, ?, 1, ?, ?)"
                    " ON CONFLICT (user_id, digest_key, fire_id) DO UPDATE SET due_ms = min(excluded.due_ms, digests.deadline_ms,"
                    " CASE WHEN digests.count + 1 >= ? THEN excluded.last_ms ELSE digests.deadline_ms END),"
                    " count = digests.count + 1, first_ms = min(digests.first_ms, excluded.first_ms),"
                    " last_ms = max(digests.last_ms, excluded.last_ms)",
                    (event.user_id, event.digest_key, min(due_ms, deadline_ms, event.at_ms if max_events <= 1 else deadline_ms),
                     deadline_ms, event.at_ms, event.at_ms, max_events),
                )

        await self._grouped(add)

    async def claim_digests(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[DigestFire]:
        def claim(db: sqlite3.Connection) -> list[DigestFire]:
            taken = db.execute(
                f"SELECT {_WINDOW_COLUMNS} FROM digests WHERE fire_id <> '' AND (lease_until <= ? OR owner = ?)"
                " ORDER BY lease_until, user_id, digest_key LIMIT ?", (now_ms, owner, limit),
            ).fetchall()
            due = db.execute(
                f"SELECT {_WINDOW_COLUMNS} FROM digests INDEXED BY digests_open_by_due WHERE fire_id = '' AND due_ms <= ?"
                " ORDER BY due_ms, user_id, digest_key LIMIT ?", (now_ms, max(0, limit - len(taken))),
            ).fetchall()
            until = now_ms + lease_ms
            fires: list[DigestFire] = []
            for row in taken:
                db.execute("UPDATE digests SET owner = ?, lease_until = ? WHERE user_id = ? AND digest_key = ? AND fire_id = ?",
                           (owner, until, row[0], row[1], row[2]))
            for row in due:
                user_id, key = row[0], row[1]
                (fire_id,) = db.execute(
                    "SELECT min(notification_id) FROM digest_events WHERE user_id = ? AND digest_key = ? AND fire_id = ''", (user_id, key),
                ).fetchone()
                if fire_id is None:  # an open window without events: nothing to fire
                    db.execute("DELETE FROM digests WHERE user_id = ? AND digest_key = ? AND fire_id = ''", (user_id, key))
                    continue
                db.execute("UPDATE digest_events SET fire_id = ? WHERE user_id = ? AND digest_key = ? AND fire_id = ''", (fire_id, user_id, key))
                db.execute("UPDATE digests SET fire_id = ?, owner = ?, lease_until = ? WHERE user_id = ? AND digest_key = ? AND fire_id = ''",
                           (fire_id, owner, until, user_id, key))
                taken.append((user_id, key, fire_id, *row[3:]))
            for row in taken:
                window = _window(row)
                events = db.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM digest_events WHERE user_id = ? AND digest_key = ? AND fire_id = ?"
                    " ORDER BY at_ms, notification_id", (window.user_id, window.digest_key, window.fire_id),
                ).fetchall()
                fires.append(DigestFire(window, tuple(_event(e) for e in events)))
            return fires

        return await self._transaction(claim)  # BEGIN IMMEDIATE: one claimer at a time, serialized with add and cancel

    async def finish_digest(self, fire_id: str) -> None:
        def finish(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT user_id, digest_key FROM digest_events WHERE notification_id = ?", (fire_id,)).fetchone()
            if row is None or not fire_id:
                return
            db.execute("DELETE FROM digest_events WHERE user_id = ? AND digest_key = ? AND fire_id = ?", (row[0], row[1], fire_id))
            db.execute("DELETE FROM digests WHERE user_id = ? AND digest_key = ? AND fire_id = ?", (row[0], row[1], fire_id))

        await self._transaction(finish)

    async def cancel_digest_event(self, notification_id: str, channels: Sequence[str], at_ms: int) -> bool:
        def cancel(db: sqlite3.Connection) -> bool:
            if channels:
                row = db.execute(
                    "SELECT status FROM send_ledger WHERE notification_id = ? AND channel = ?", (notification_id, channels[0])
                ).fetchone()
                if row is not None:
                    return str(row[0]) == CANCELLED
            event = db.execute(
                "SELECT user_id, digest_key FROM digest_events WHERE notification_id = ? AND fire_id = ''", (notification_id,)
            ).fetchone()
            if event is None:
                return False
            user_id, key = event
            db.execute("DELETE FROM digest_events WHERE notification_id = ?", (notification_id,))
            db.execute("UPDATE digests SET count = count - 1 WHERE user_id = ? AND digest_key = ? AND fire_id = ''", (user_id, key))
            db.execute("DELETE FROM digests WHERE user_id = ? AND digest_key = ? AND fire_id = '' AND count <= 0", (user_id, key))
            db.executemany(
                "INSERT INTO send_ledger (notification_id, channel, at_ms, status) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(notification_id, c, at_ms, CANCELLED) for c in channels],
            )
            return True

        return await self._transaction(cancel)  # BEGIN IMMEDIATE: serialized with claim_digests on this file

    async def digest_windows(self, user_id: str) -> list[DigestWindow]:
        sql = f"SELECT {_WINDOW_COLUMNS} FROM digests WHERE user_id = ? ORDER BY due_ms, digest_key, fire_id"
        return [_window(r) for r in await self._read(lambda db: db.execute(sql, (user_id,)).fetchall())]

    async def next_digest_ms(self) -> int | None:
        def earliest(db: sqlite3.Connection) -> int | None:
            due = db.execute("SELECT min(due_ms) FROM digests WHERE fire_id = ''").fetchone()[0]
            lease = db.execute("SELECT min(lease_until) FROM digests WHERE fire_id <> ''").fetchone()[0]
            times = [int(t) for t in (due, lease) if t is not None]
            return min(times) if times else None

        return await self._read(earliest)

    async def sent_status(self, notification_id: str, channel: str) -> str | None:
        row = await self._read(lambda db: db.execute(
            "SELECT status FROM send_ledger WHERE notification_id = ? AND channel = ?", (notification_id, channel)
        ).fetchone())
        return None if row is None else str(row[0])

    async def mark_sent(self, notification_id: str, channel: str, status: str, at_ms: int) -> None:
        await self._grouped(lambda db: db.execute(
            "INSERT OR IGNORE INTO send_ledger (notification_id, channel, at_ms, status) VALUES (?, ?, ?, ?)",
            (notification_id, channel, at_ms, status),
        ))

    async def mark_sent_many(self, marks: Sequence[tuple[str, str, str, int]]) -> None:
        rows = [(notification_id, channel, at_ms, status) for notification_id, channel, status, at_ms in marks]
        if rows:
            await self._grouped(lambda db: db.executemany(
                "INSERT OR IGNORE INTO send_ledger (notification_id, channel, at_ms, status) VALUES (?, ?, ?, ?)", rows,
            ))

    # -- topics

    async def add_subscribers(self, topic: str, user_ids: Sequence[str]) -> int:
        rows = [(topic, u) for u in dict.fromkeys(user_ids)]
        return await self._transaction(
            lambda db: db.executemany("INSERT OR IGNORE INTO topic_subscribers (topic, user_id) VALUES (?, ?)", rows).rowcount
        )

    async def remove_subscribers(self, topic: str, user_ids: Sequence[str]) -> int:
        rows = [(topic, u) for u in dict.fromkeys(user_ids)]
        return await self._transaction(
            lambda db: db.executemany("DELETE FROM topic_subscribers WHERE topic = ? AND user_id = ?", rows).rowcount
        )

    async def subscribers(self, topic: str, after: str, limit: int) -> list[str]:
        rows = await self._read(lambda db: db.execute(
            "SELECT user_id FROM topic_subscribers WHERE topic = ? AND user_id > ? ORDER BY user_id LIMIT ?", (topic, after, limit)
        ).fetchall())
        return [str(r[0]) for r in rows]

    async def subscriber_count(self, topic: str) -> int:
        row = await self._read(lambda db: db.execute("SELECT count(*) FROM topic_subscribers WHERE topic = ?", (topic,)).fetchone())
        return int(row[0])

    async def add_fanout(self, job: FanoutJob) -> None:
        await self._grouped(lambda db: db.execute(
            f"INSERT OR IGNORE INTO fanouts ({_FANOUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.topic, job.request, job.created_ms, job.total, job.cursor, job.expanded, job.counts, job.done_ms),
        ))

    async def fanout(self, job_id: str) -> FanoutJob | None:
        row = await self._read(lambda db: db.execute(f"SELECT {_FANOUT_COLUMNS} FROM fanouts WHERE id = ?", (job_id,)).fetchone())
        return None if row is None else _fanout(row)

    async def claim_fanout(self, owner: str, now_ms: int, lease_ms: int) -> FanoutJob | None:
        def claim(db: sqlite3.Connection) -> FanoutJob | None:
            row = db.execute(
                f"SELECT {_FANOUT_COLUMNS} FROM fanouts INDEXED BY fanouts_open WHERE done_ms IS NULL"
                " AND (lease_until <= ? OR owner = ?) ORDER BY created_ms, id LIMIT 1", (now_ms, owner),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE fanouts SET owner = ?, lease_until = ? WHERE id = ?", (owner, now_ms + lease_ms, row[0]))
            return _fanout(row)

        return await self._transaction(claim)

    async def checkpoint_fanout(self, owner: str, job: FanoutJob, now_ms: int, lease_ms: int) -> bool:
        def checkpoint(db: sqlite3.Connection) -> bool:
            return db.execute(
                "UPDATE fanouts SET cursor = ?, expanded = ?, counts = ?, done_ms = ?, lease_until = ?"
                " WHERE id = ? AND owner = ?",
                (job.cursor, job.expanded, job.counts, job.done_ms, now_ms + lease_ms, job.id, owner),
            ).rowcount == 1

        return await self._transaction(checkpoint)
