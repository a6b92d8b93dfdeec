"""The log store as it was before the write plan (commit a64784a), kept as the oracle of today's behaviour.

Before the Recorder planned, the SQLite adapter decided the lifecycle, the timeline's order,
the counters and the inbox changes inside its own transaction (`record`, `inbox_mark_*`).
tests/actors/test_write_planner.py writes the same random event sequences through it and
through the Recorder's planner with the embedded backend's `apply`, and compares everything
observable: the planner must decide what this code decided. Frozen test code: not used by
Herald; drop it once nobody needs the comparison.
"""


from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import msgspec
import trio

from protocol.lifecycle import RANK, ROUND_SIZE, Status, Step, position, round_of, timeline_step
from protocol.messages import InboxEntry, StatusEvent

from reactor.ports import EventRow, InboxRow, StatusRow

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notification_logs (
    user_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    notification_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    template_id TEXT,
    updated_ms INTEGER NOT NULL,
    delivered_ms INTEGER,
    error_message TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (user_id, created_ms, notification_id, channel)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notification_status (
    notification_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (notification_id, channel)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notification_events (
    notification_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    step INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS daily_notification_stats (
    date TEXT NOT NULL,
    channel TEXT NOT NULL,
    hour INTEGER NOT NULL,
    sent_count INTEGER NOT NULL DEFAULT 0,
    delivered_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (date, channel, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS web_inbox (
    user_id TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    read_ms INTEGER,
    archived_ms INTEGER,
    PRIMARY KEY (user_id, notification_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS web_inbox_by_seq ON web_inbox (user_id, seq);
"""

_LOAD_STATUS = f"""
SELECT notification_id, channel, user_id, status, priority, created_ms,
    COALESCE((SELECT MAX(step) FROM notification_events e
              WHERE e.notification_id = s.notification_id AND e.channel = s.channel), 0) / {ROUND_SIZE}
FROM notification_status s
WHERE notification_id IN (SELECT value FROM json_each(?))
"""

_UPSERT_STATUS = """
INSERT INTO notification_status
    (notification_id, channel, user_id, status, priority, created_ms, updated_ms, detail)
VALUES (:nid, :channel, :user_id, :status, :priority, :created_ms, :updated_ms, :detail)
ON CONFLICT (notification_id, channel) DO UPDATE SET
    status = excluded.status, updated_ms = excluded.updated_ms, detail = excluded.detail
"""

_UPSERT_LOG = """
INSERT INTO notification_logs
    (user_id, created_ms, notification_id, channel, status, priority, template_id,
     updated_ms, delivered_ms, error_message, metadata)
VALUES (:user_id, :created_ms, :nid, :channel, :status, :priority, NULLIF(:template, ''),
        :updated_ms, :delivered_ms, :error, json_object('detail', :detail))
ON CONFLICT (user_id, created_ms, notification_id, channel) DO UPDATE SET
    status = excluded.status,
    updated_ms = excluded.updated_ms,
    delivered_ms = COALESCE(notification_logs.delivered_ms, excluded.delivered_ms),
    error_message = excluded.error_message,
    metadata = json_set(notification_logs.metadata, '$.detail', :detail),
    template_id = COALESCE(excluded.template_id, notification_logs.template_id)
"""

_INSERT_EVENT = """
INSERT OR IGNORE INTO notification_events (notification_id, channel, status, at_ms, detail, step)
VALUES (?, ?, ?, ?, ?, ?)
"""

# When the steps after a late one were reached: the late step is shown at that time at the latest.
_LATER_STEP_MS = """
SELECT MIN(at_ms) FROM notification_events WHERE notification_id = ? AND channel = ? AND step > ? AND step < ?
"""

_BUMP_STATS = """
INSERT INTO daily_notification_stats (date, channel, hour, sent_count, delivered_count, failed_count)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (date, channel, hour) DO UPDATE SET
    sent_count = sent_count + excluded.sent_count,
    delivered_count = delivered_count + excluded.delivered_count,
    failed_count = failed_count + excluded.failed_count
"""

_INSERT_INBOX = """
INSERT OR IGNORE INTO web_inbox (user_id, notification_id, created_ms, seq, payload) VALUES (?, ?, ?, ?, ?)
"""

_SENT_OR_LATER = frozenset({Status.SENT, Status.DELIVERED, Status.OPENED, Status.READ})
_DELIVERED_OR_LATER = frozenset({Status.DELIVERED, Status.OPENED, Status.READ})
_FAILED = frozenset({Status.FAILED, Status.DEAD_LETTERED})

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_EPOCH = dt.date(1970, 1, 1)

_inbox_encoder = msgspec.json.Encoder()
_inbox_decoder = msgspec.json.Decoder(InboxEntry)


@lru_cache(maxsize=1024)
def _utc_date(day: int) -> str:
    """The UTC date YYYY-MM-DD of a day count since the epoch."""
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


def _bucket(at_ms: int) -> tuple[str, int]:
    """The (UTC date, hour) counter bucket of a timestamp."""
    day, rest = divmod(at_ms, _DAY_MS)
    return _utc_date(day), rest // _HOUR_MS


def _counts(old: Status | None, new: Status) -> tuple[int, int, int]:
    """The (sent, delivered, failed) increments of a status change."""
    sent = int(new in _SENT_OR_LATER and old not in _SENT_OR_LATER)
    delivered = int(new in _DELIVERED_OR_LATER and old not in _DELIVERED_OR_LATER)
    failed = int(new in _FAILED and old not in _FAILED)
    return sent, delivered, failed


def _encode_key(*parts: int | str) -> str:
    """An opaque, url-safe cursor for a row's sort key."""
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_key(cursor: str, shape: tuple[type, ...]) -> list[int | str]:
    """The sort key in a cursor, checked against `shape`; ValueError("invalid cursor") if it does not fit."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeError, RecursionError):  # RecursionError: "[[[[..." nested past the limit
        raise ValueError("invalid cursor") from None
    if not isinstance(key, list) or len(key) != len(shape):
        raise ValueError("invalid cursor")
    for part, kind in zip(key, shape):
        # type() is: a bool is not an int here; ints must fit SQLite's INTEGER
        if type(part) is not kind or (kind is int and not -(2**63) <= part < 2**63):
            raise ValueError("invalid cursor")
    return key


def encode_cursor(created_ms: int, notification_id: str, channel: str) -> str:
    """An opaque, url-safe cursor for a history row's sort key."""
    return _encode_key(created_ms, notification_id, channel)


def decode_cursor(cursor: str) -> tuple[int, str, str]:
    """The sort key in a cursor; raises ValueError("invalid cursor") if malformed."""
    created_ms, notification_id, channel = _decode_key(cursor, (int, str, str))
    return int(created_ms), str(notification_id), str(channel)


class _Key(msgspec.Struct):
    """The state of one (notification, channel) while a batch is applied."""

    user_id: str
    priority: str
    created_ms: int
    status: Status
    round: int = 0  # replays from the dead-letter queue so far: the timeline's round
    changed: bool = False
    updated_ms: int = 0
    detail: str = ""
    delivered_ms: int | None = None
    template: str = ""


_Row = tuple[str, str, str, int, str, int]  # a timeline row: (notification_id, channel, status, at_ms, detail, step)


def _flush(db: sqlite3.Connection, pending: list[_Row]) -> None:
    """Insert the batch's timeline rows so far, so that a query sees them."""
    db.executemany(_INSERT_EVENT, pending)
    pending.clear()


def _late_at_ms(db: sqlite3.Connection, pending: list[_Row], nid: str, channel: str, step: int, at_ms: int) -> int:
    """The time to show a late step at: its own, or when the first later step of its round was reached if earlier."""
    _flush(db, pending)
    end = (round_of(step) + 1) * ROUND_SIZE
    (later_ms,) = db.execute(_LATER_STEP_MS, (nid, channel, step, end)).fetchone()
    return at_ms if later_ms is None else min(at_ms, later_ms)


def _started_this_round(db: sqlite3.Connection, pending: list[_Row], e: StatusEvent, step: int) -> bool:
    """Whether this replay event is the one that started the current round (redelivered: not a new replay)."""
    _flush(db, pending)
    return db.execute(
        "SELECT 1 FROM notification_events WHERE notification_id = ? AND channel = ? AND step = ? AND status = ? AND detail = ?",
        (e.notification_id, e.channel.value, step, e.status.value, e.detail),
    ).fetchone() is not None


def _apply(db: sqlite3.Connection, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry]) -> None:
    """Run one record() batch as one transaction on the writer connection."""
    ids = sorted({e.notification_id for e in events})
    db.execute("BEGIN IMMEDIATE")
    try:
        keys: dict[tuple[str, str], _Key] = {}
        if ids:
            for nid, channel, user_id, status, priority, created_ms, round_ in db.execute(_LOAD_STATUS, (json.dumps(ids),)):
                keys[(nid, channel)] = _Key(user_id, priority, created_ms, Status(status), round_)
        timeline: list[_Row] = []
        stats: dict[tuple[str, str, int], list[int]] = {}
        for e in events:
            channel = e.channel.value
            key = keys.get((e.notification_id, channel))
            if e.client and (key is None or key.user_id != e.user_id):
                continue  # a client's ack or read never creates a row, nor touches another user's
            old = None if key is None else key.status
            step = timeline_step(old, e.status, replay=e.replay)
            if step is Step.REPLAYED and key is not None and _started_this_round(db, timeline, e, position(key.round, e.status)):
                step = Step.LATE  # the replay that started this round, redelivered: already applied
            if e.client and step is not Step.ADVANCE:
                continue  # a client's event that moves nothing (a second tab's ack, an ack after a read) adds nothing
            if key is None:
                key = keys[(e.notification_id, channel)] = _Key(
                    e.user_id, e.priority.value, e.created_ms or e.at_ms, e.status
                )
            if step is Step.REPLAYED:
                key.round += 1
            row_step, at_ms = position(key.round, e.status), e.at_ms
            if step is Step.LATE or step is Step.CONFLICT:  # it may sort before steps already there
                at_ms = _late_at_ms(db, timeline, e.notification_id, channel, row_step, at_ms)
            timeline.append((e.notification_id, channel, e.status.value, at_ms, e.detail, row_step))
            if step is not Step.ADVANCE and step is not Step.REPLAYED:
                continue  # kept in the timeline; the status does not move
            key.status, key.changed, key.updated_ms, key.detail = e.status, True, e.at_ms, e.detail
            key.template = e.template or key.template
            if e.status in _DELIVERED_OR_LATER and old not in _DELIVERED_OR_LATER:
                key.delivered_ms = e.at_ms
            bump = _counts(old, e.status)
            if any(bump):
                date, hour = _bucket(e.at_ms)
                counter = stats.setdefault((date, channel, hour), [0, 0, 0])
                for i, n in enumerate(bump):
                    counter[i] += n
        rows = [
            {
                "nid": nid, "channel": channel, "user_id": k.user_id, "status": k.status.value,
                "priority": k.priority, "created_ms": k.created_ms, "updated_ms": k.updated_ms,
                "detail": k.detail, "delivered_ms": k.delivered_ms,
                "error": k.detail if k.status in _FAILED else "", "template": k.template,
            }
            for (nid, channel), k in keys.items()
            if k.changed
        ]
        db.executemany(_UPSERT_STATUS, rows)
        db.executemany(_UPSERT_LOG, rows)
        db.executemany(_INSERT_EVENT, timeline)
        db.executemany(_BUMP_STATS, [(*bucket, *counts) for bucket, counts in stats.items()])
        db.executemany(
            _INSERT_INBOX,
            [(i.user_id, i.notification_id, i.created_ms, i.seq, _inbox_encoder.encode(i)) for i in inbox],
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _connect(path: Path, *, reader: bool) -> sqlite3.Connection:
    """A connection in WAL mode with synchronous=FULL (query-only for the reader)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    if reader:
        db.execute("PRAGMA query_only=ON")
    else:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        _migrate_inbox(db)
        _migrate_events(db)
    return db


# The detail of the events that took the replay edge before the timeline had rounds (actors/services/dead_letters.py, consumer.py).
_REPLAY_DETAILS = ("replayed from the dead-letter queue%", "attempted again and succeeded%")
_RANK_OF_STATUS = "CASE status " + " ".join(f"WHEN '{s.value}' THEN {RANK[s]}" for s in Status) + " END"
# A row's round: the replay events at or before it, in the order the timeline was read in (at_ms, rowid).
_MIGRATE_STEPS = f"""
UPDATE notification_events AS e SET step = {_RANK_OF_STATUS} + {ROUND_SIZE} * (
    SELECT COUNT(*) FROM notification_events p
    WHERE p.notification_id = e.notification_id AND p.channel = e.channel AND p.status = 'queued'
      AND (p.detail LIKE ? OR p.detail LIKE ?) AND (p.at_ms, p.rowid) <= (e.at_ms, e.rowid)
)
"""


def _migrate_events(db: sqlite3.Connection) -> None:
    """Give the timeline rows of a file from before `step` existed their place (idempotent, one transaction)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(notification_events)")}
    if "step" not in columns:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE notification_events ADD COLUMN step INTEGER NOT NULL DEFAULT 0")
            db.execute(_MIGRATE_STEPS, _REPLAY_DETAILS)
            db.execute("DROP INDEX IF EXISTS notification_events_by_id")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    db.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS notification_events_by_step"
        " ON notification_events (notification_id, channel, step, status, detail)"
    )


def _migrate_inbox(db: sqlite3.Connection) -> None:
    """Add the read-state columns to a web_inbox created before they existed (idempotent)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(web_inbox)")}
    for column in ("read_ms", "archived_ms"):
        if column not in columns:
            db.execute(f"ALTER TABLE web_inbox ADD COLUMN {column} INTEGER")
    db.execute(
        "CREATE INDEX IF NOT EXISTS web_inbox_unread ON web_inbox (user_id, seq)"
        " WHERE read_ms IS NULL AND archived_ms IS NULL"
    )


def encode_inbox_cursor(seq: int, notification_id: str) -> str:
    """An opaque, url-safe cursor for an inbox row's position (delivery order)."""
    return _encode_key(seq, notification_id)


def decode_inbox_cursor(cursor: str) -> tuple[int, str]:
    """The position in an inbox cursor; raises ValueError("invalid cursor") if malformed."""
    seq, notification_id = _decode_key(cursor, (int, str))
    return int(seq), str(notification_id)


def _inbox_row(row: tuple[Any, ...]) -> InboxRow:
    """An InboxRow from (payload, read_ms, archived_ms)."""
    return InboxRow(_inbox_decoder.decode(row[0]), row[1], row[2])


def _set_once(db: sqlite3.Connection, column: str, user_id: str, ids: Sequence[str], at_ms: int) -> list[str]:
    """Set `column` (read_ms or archived_ms) on the listed entries where it is unset; the ids changed."""
    rows = db.execute(
        f"UPDATE web_inbox SET {column} = ? WHERE user_id = ? AND {column} IS NULL"
        " AND notification_id IN (SELECT value FROM json_each(?)) RETURNING notification_id",
        (at_ms, user_id, json.dumps(list(ids))),
    ).fetchall()
    changed = {row[0] for row in rows}
    return [i for i in dict.fromkeys(ids) if i in changed]


def _mark_all_read(db: sqlite3.Connection, user_id: str, at_ms: int, through_id: str | None) -> tuple[list[str], str | None]:
    """Mark read every unread entry (not archived) up to through_id (or the newest entry) in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if through_id is None:
            top = db.execute(
                "SELECT seq, notification_id FROM web_inbox WHERE user_id = ?"
                " ORDER BY seq DESC, notification_id DESC LIMIT 1",
                (user_id,),
            ).fetchone()
        else:
            top = db.execute(
                "SELECT seq, notification_id FROM web_inbox WHERE user_id = ? AND notification_id = ?", (user_id, through_id)
            ).fetchone()
        if top is None:
            db.execute("COMMIT")
            return [], None
        # unread as inbox_unread_count counts it: neither read nor archived
        where = "user_id = ? AND read_ms IS NULL AND archived_ms IS NULL AND (seq, notification_id) <= (?, ?)"
        ids = [row[0] for row in db.execute(
            f"SELECT notification_id FROM web_inbox WHERE {where} ORDER BY seq, notification_id", (user_id, *top)
        )]
        db.execute(f"UPDATE web_inbox SET read_ms = ? WHERE {where}", (at_ms, user_id, *top))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return ids, top[1]


class LegacySqliteLogStore:
    """The LogStore as it was, on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = trio.Lock()
        self._read_lock = trio.Lock()

    async def open(self) -> None:
        """Open both connections and create the schema if it is missing."""
        if self._writer is not None:
            return
        async with self._write_lock:
            self._writer = await trio.to_thread.run_sync(lambda: _connect(self.path, reader=False))
        async with self._read_lock:
            self._reader = await trio.to_thread.run_sync(lambda: _connect(self.path, reader=True))

    async def close(self) -> None:
        """Close both connections (waiting for a running call); safe to call twice."""
        async with self._write_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                await trio.to_thread.run_sync(writer.close)
        async with self._read_lock:
            reader, self._reader = self._reader, None
            if reader is not None:
                await trio.to_thread.run_sync(reader.close)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn on the writer connection in one worker-thread hop."""
        async with self._write_lock:
            db = self._writer
            if db is None:
                raise RuntimeError("LegacySqliteLogStore is not open")
            return await trio.to_thread.run_sync(fn, db)

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one query on the read connection in one worker-thread hop."""
        async with self._read_lock:
            db = self._reader
            if db is None:
                raise RuntimeError("LegacySqliteLogStore is not open")
            return await trio.to_thread.run_sync(lambda: db.execute(sql, params).fetchall())

    async def record(self, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry] = ()) -> None:
        """Apply status events and inbox entries in one durable transaction."""
        if not events and not inbox:
            return
        await self._write(lambda db: _apply(db, events, inbox))

    async def statuses(self, notification_id: str) -> list[StatusRow]:
        """The current status of each channel of a notification."""
        rows = await self._read(
            "SELECT notification_id, user_id, channel, status, priority, created_ms, updated_ms, detail,"
            " COALESCE((SELECT template_id FROM notification_logs l WHERE l.user_id = s.user_id"
            " AND l.created_ms = s.created_ms AND l.notification_id = s.notification_id AND l.channel = s.channel), '')"
            " FROM notification_status s WHERE notification_id = ? ORDER BY channel",
            (notification_id,),
        )
        return [StatusRow(*row) for row in rows]

    async def events(self, notification_id: str) -> list[EventRow]:
        """A notification's timeline, each channel's in lifecycle order (step), then by time and insertion."""
        rows = await self._read(
            "SELECT channel, status, at_ms, detail FROM notification_events"
            " WHERE notification_id = ? ORDER BY channel, step, at_ms, rowid",
            (notification_id,),
        )
        return [EventRow(*row) for row in rows]

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
        """The user's notifications newest first (created_ms in [since_ms, until_ms))."""
        if limit < 1:
            raise ValueError("limit must be positive")
        where, params = ["user_id = ?"], [user_id]
        if channel is not None:
            where.append("channel = ?")
            params.append(channel)
        if since_ms is not None:
            where.append("created_ms >= ?")
            params.append(since_ms)
        if until_ms is not None:
            where.append("created_ms < ?")
            params.append(until_ms)
        if cursor is not None:
            where.append("(created_ms, notification_id, channel) < (?, ?, ?)")
            params.extend(decode_cursor(cursor))
        rows = await self._read(
            "SELECT notification_id, user_id, channel, status, priority, created_ms, updated_ms,"
            " COALESCE(json_extract(metadata, '$.detail'), ''), COALESCE(template_id, '') FROM notification_logs"
            f" WHERE {' AND '.join(where)}"
            " ORDER BY created_ms DESC, notification_id DESC, channel DESC LIMIT ?",
            (*params, limit + 1),
        )
        page = [StatusRow(*row) for row in rows[:limit]]
        if len(rows) <= limit:
            return page, None
        last = page[-1]
        return page, encode_cursor(last.created_ms, last.notification_id, last.channel)

    async def inbox_after(self, user_id: str, after_id: str | None, limit: int = 500) -> list[InboxEntry]:
        """Web notifications delivered after `after_id`, in delivery order (`seq`).

        Delivery order, not id order: ids are assigned before the bus append, so two
        concurrent submissions can reach the partition in the other order. An unknown
        after_id (never delivered, or another user's) yields everything retained:
        a duplicate the client drops is better than a gap.
        """
        rows = await self._read(
            "SELECT payload FROM web_inbox WHERE user_id = ? AND seq > COALESCE("
            "(SELECT seq FROM web_inbox WHERE user_id = ? AND notification_id = ?), -1)"
            " ORDER BY seq LIMIT ?",
            (user_id, user_id, after_id or "", limit),
        )
        return [_inbox_decoder.decode(row[0]) for row in rows]

    async def inbox_get(self, user_id: str, notification_id: str) -> InboxRow | None:
        """One entry of the user's inbox with its read state; None if it is not (yet) there."""
        rows = await self._read(
            "SELECT payload, read_ms, archived_ms FROM web_inbox WHERE user_id = ? AND notification_id = ?",
            (user_id, notification_id),
        )
        return _inbox_row(rows[0]) if rows else None

    async def inbox_page(
        self, user_id: str, *, unread: bool = False, archived: bool = False, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[InboxRow], str | None]:
        """The user's inbox newest first (delivery order): not archived, or only the archived ones when `archived`."""
        if limit < 1:
            raise ValueError("limit must be positive")
        where: list[str] = ["user_id = ?"]
        params: list[Any] = [user_id]
        if unread:
            where.append("read_ms IS NULL")
        where.append("archived_ms IS NOT NULL" if archived else "archived_ms IS NULL")
        if cursor is not None:
            where.append("(seq, notification_id) < (?, ?)")
            params.extend(decode_inbox_cursor(cursor))
        rows = await self._read(
            f"SELECT payload, read_ms, archived_ms, seq FROM web_inbox WHERE {' AND '.join(where)}"
            " ORDER BY seq DESC, notification_id DESC LIMIT ?",
            (*params, limit + 1),
        )
        page = [_inbox_row(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return page, None
        return page, encode_inbox_cursor(rows[limit - 1][3], page[-1].entry.notification_id)

    async def inbox_unread_count(self, user_id: str) -> int:
        """Entries neither read nor archived."""
        rows = await self._read(
            "SELECT COUNT(*) FROM web_inbox WHERE user_id = ? AND read_ms IS NULL AND archived_ms IS NULL", (user_id,)
        )
        return int(rows[0][0])

    async def inbox_mark_read(self, user_id: str, ids: Sequence[str], at_ms: int) -> list[str]:
        """Mark these entries read; returns the ids that were unread."""
        return await self._write(lambda db: _set_once(db, "read_ms", user_id, ids, at_ms))

    async def inbox_mark_all_read(self, user_id: str, at_ms: int, through_id: str | None = None) -> tuple[list[str], str | None]:
        """Mark read everything delivered up to through_id (all when None); (ids newly read, newest id covered)."""
        return await self._write(lambda db: _mark_all_read(db, user_id, at_ms, through_id))

    async def inbox_archive(self, user_id: str, ids: Sequence[str], at_ms: int) -> list[str]:
        """Archive these entries; returns the ids that were not archived yet."""
        return await self._write(lambda db: _set_once(db, "archived_ms", user_id, ids, at_ms))

    async def daily_counts(self, date: str, channel: str) -> dict[str, int]:
        """{'sent', 'delivered', 'failed'} summed over the hours of a UTC date."""
        rows = await self._read(
            "SELECT COALESCE(SUM(sent_count), 0), COALESCE(SUM(delivered_count), 0),"
            " COALESCE(SUM(failed_count), 0) FROM daily_notification_stats WHERE date = ? AND channel = ?",
            (date, channel),
        )
        sent, delivered, failed = rows[0]
        return {"sent": sent, "delivered": delivered, "failed": failed}
