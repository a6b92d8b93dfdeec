"""The embedded LogStore backend: SQLite, with a schema that mirrors the Cassandra one.

It applies write plans (protocol/write_plan.py) and answers reads; it decides nothing:
the lifecycle, the timeline's order, the counters and the inbox changes are the
Recorder's (actors/domain/write_planner.py). Tables (the Cassandra layout in spirit: one
table per query, keyed for that query):

- notification_logs: a user's history, clustered by (created_ms, notification_id, channel)
  and read newest first. `metadata` is a JSON object holding the last move's `detail`;
  `template_id` is the template tag ("welcome@3#B": template, version, A/B variant) of a
  notification rendered from a template, NULL otherwise.
- notification_status: the current status of each (notification_id, channel), with its
  `step` (protocol.lifecycle.position: the round, then the status's rank), which a move's
  guard is checked against.
- notification_events: the attempt timeline, one row per step, unique per (notification,
  channel, step, status, detail): an AddStep already there adds nothing.
- daily_notification_stats: sent/delivered/failed counters per UTC date, channel and hour.
  A plan's CountOnce is counted in the transaction that applies the move of its key, and
  only if that move applies (once per mark): applied again, the move's guard no longer
  holds and nothing is counted. (A backend without transactions keeps marks instead:
  protocol/write_plan.py.)
- web_inbox: web notifications kept per user (msgspec JSON of InboxEntry), for sync and the
  inbox API, with their read and archived times (columns added in place to an older file).

A plan is applied in one transaction, so a crash leaves all of it or none; each operation
is idempotent anyway (the port's contract: reactor/ports.py, LogStore.apply).

Cursors: url-safe base64 of a JSON list: the listing ("history", "inbox"), a short digest
of the user it was handed out for, then the last row's sort key. A cursor of another
listing or another user, or one that does not decode to that shape, is InvalidCursor
(reactor/backends/cursors.py, shared with the Cassandra log store).

Durability: the PartitionConsumer commits bus offsets only after the Recorder's answer,
which comes after `apply()` returns, so a committed transaction must survive a power
loss. The database runs in WAL mode with synchronous=FULL (NORMAL may lose the last
transactions on power loss in WAL mode).

Concurrency: one writer connection and a few read connections (READERS), each used by one
worker thread at a time. `apply` group-commits (reactor/group_commit.py, sqlite.py): plans
applied concurrently share one transaction, each plan in a savepoint of its own, with one
commit and one fsync, after a linger of `linger_s` at most; each call returns once its
plan is durable. The Recorder's reads (key_states, inbox_unread) run on the writer
connection, so they see every plan applied and never wait behind the API's reads; the
API's reads run on the read connections, on a thread limiter of their own, and never
wait behind a write transaction (WAL readers see the last committed snapshot) nor behind
the threads of the node's other I/O.
"""

from __future__ import annotations

import json
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import msgspec
import trio

from protocol.lifecycle import RANK, RANK_VERSION, ROUND_SIZE, Status
from protocol.messages import InboxEntry
from protocol.write_plan import (
    Counter,
    InboxField,
    KeyState,
    MoveStatus,
    StatusKey,
    TimelineRow,
    UnreadThrough,
    WritePlan,
)

from reactor.backends.cursors import decode_cursor, decode_inbox_cursor, encode_cursor, encode_inbox_cursor
from reactor.group_commit import GroupCommit
from reactor.ports import EventRow, InboxRow, NotFresh, StatusRow

from .sqlite import Job, ReadPool, connect, run_jobs

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
    step INTEGER NOT NULL DEFAULT 0,
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



# The stored status of some notifications' channels.
_STATUSES = """
SELECT notification_id, channel, user_id, status, priority, created_ms, step FROM notification_status
WHERE notification_id IN (SELECT value FROM json_each(?))
"""
# The timeline rows of some notifications (the caller keeps those of each channel's current round).
_TIMELINES = """
SELECT notification_id, channel, step, status, detail, at_ms FROM notification_events
WHERE notification_id IN (SELECT value FROM json_each(?))
"""

_INSERT_EVENT = "INSERT OR IGNORE INTO notification_events (notification_id, channel, status, at_ms, detail, step) VALUES {rows}"

_BUMP_STATS = """
INSERT INTO daily_notification_stats (date, channel, hour, sent_count, delivered_count, failed_count)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (date, channel, hour) DO UPDATE SET
    sent_count = sent_count + excluded.sent_count,
    delivered_count = delivered_count + excluded.delivered_count,
    failed_count = failed_count + excluded.failed_count
"""

_INSERT_INBOX = "INSERT OR IGNORE INTO web_inbox (user_id, notification_id, created_ms, seq, payload) VALUES {rows}"

_SET_INBOX_TIME = {
    InboxField.READ: "UPDATE web_inbox SET read_ms = ? WHERE user_id = ? AND notification_id = ? AND read_ms IS NULL",
    InboxField.ARCHIVED: "UPDATE web_inbox SET archived_ms = ? WHERE user_id = ? AND notification_id = ? AND archived_ms IS NULL",
}

_STATUS = {s.value: s for s in Status}
_inbox_encoder = msgspec.json.Encoder()
_inbox_decoder: msgspec.json.Decoder[InboxEntry] = msgspec.json.Decoder(InboxEntry)


_GUARDS = 8  # guard slots of the move statements: a MoveStatus.after this long or shorter (padded with -1)
_NO_STEP = -1  # pads the guard slots: no row has this step


def _guard(column: str, first: int) -> str:
    """`column` equal to one of the guard's parameters (?first onwards); ORed equalities, cheaper than IN here."""
    return "(" + " OR ".join(f"{column} = ?{i}" for i in range(first, first + _GUARDS)) + ")"


# A move of a row that may be missing: created if it is, else moved if its step is in the guard.
_MOVE_OR_CREATE = f"""
INSERT INTO notification_status (notification_id, channel, status, step, updated_ms, detail, user_id, priority, created_ms)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (notification_id, channel) DO UPDATE SET
    status = excluded.status, step = excluded.step, updated_ms = excluded.updated_ms, detail = excluded.detail
WHERE {_guard('notification_status.step', 10)}
"""
# The status row of a fresh key's move (WritePlan.fresh): a row already there is left as it is (and the plan refused).
_CREATE_STATUS = """
INSERT OR IGNORE INTO notification_status (notification_id, channel, status, step, updated_ms, detail, user_id, priority, created_ms)
VALUES {rows}
"""
# A move of a row that must exist: moved if its step is in the guard.
_MOVE = f"""
UPDATE notification_status SET status = ?3, step = ?4, updated_ms = ?5, detail = ?6
WHERE notification_id = ?1 AND channel = ?2 AND {_guard('step', 7)}
"""
# The user's history row of a move that was applied: the same status, and what only the history keeps.
_UPSERT_LOG = """
INSERT INTO notification_logs
    (user_id, created_ms, notification_id, channel, status, priority, template_id,
     updated_ms, delivered_ms, error_message, metadata)
VALUES (?, ?, ?, ?, ?, ?, NULLIF(?, ''), ?, ?, ?, json_object('detail', ?))
ON CONFLICT (user_id, created_ms, notification_id, channel) DO UPDATE SET
    status = excluded.status,
    updated_ms = excluded.updated_ms,
    delivered_ms = COALESCE(notification_logs.delivered_ms, excluded.delivered_ms),
    error_message = excluded.error_message,
    metadata = json_set(notification_logs.metadata, '$.detail', json_extract(excluded.metadata, '$.detail')),
    template_id = COALESCE(excluded.template_id, notification_logs.template_id)
"""
_COUNTER_COLUMN = {Counter.SENT: 0, Counter.DELIVERED: 1, Counter.FAILED: 2}


def _history_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A history row's primary key (user_id, created_ms, notification_id, channel): the first four of its upsert's parameters."""
    return row[:4]

_CHUNK = 32  # rows per statement of _insert_rows (the whole chunks': one statement, prepared once and reused)


@lru_cache(maxsize=32)
def _rows_sql(sql: str, row: str, count: int) -> str:
    """`sql` with `count` rows of parameters (`row`) in its VALUES list."""
    return sql.format(rows=", ".join([row] * count))


def _insert_rows(db: sqlite3.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Run an insert (`sql`: its VALUES list `{rows}`, a ? per column) for each of `rows`, as executemany would,
    in multi-row statements of _CHUNK rows, the rest one row each. Measured on a fresh batch's rows: the timeline's
    inserts 4.8 -> 2.8 us per notification, the status rows' 2.2 -> 1.6 (the upsert of the history rows, scattered
    by user, measured slower this way: 4.4 -> 8.1, so it stays one row per execution)."""
    if not rows:
        return
    row = "(" + ", ".join("?" * len(rows[0])) + ")"
    whole = len(rows) - len(rows) % _CHUNK
    if whole:
        db.executemany(
            _rows_sql(sql, row, _CHUNK),
            [[value for r in rows[i : i + _CHUNK] for value in r] for i in range(0, whole, _CHUNK)],
        )
    if whole < len(rows):
        db.executemany(_rows_sql(sql, row, 1), rows[whole:])


def _move_params(m: MoveStatus) -> tuple[Any, ...]:
    """A move's parameters: for _MOVE_OR_CREATE (?1 to ?17) if it may create its row, else for _MOVE (?1 to ?14)."""
    if len(m.after) > _GUARDS:
        raise ValueError(f"a MoveStatus guard holds more than {_GUARDS} steps")  # no plan's does: no status has that many before it
    guard = (*m.after, *(_NO_STEP,) * (_GUARDS - len(m.after)))
    if m.create:
        return (
            m.notification_id, m.channel, m.status.value, m.step, m.updated_ms, m.detail, m.user_id, m.priority, m.created_ms,
            *guard,
        )
    return (m.notification_id, m.channel, m.status.value, m.step, m.updated_ms, m.detail, *guard)


def _moves(db: sqlite3.Connection, moves: Sequence[MoveStatus]) -> list[MoveStatus]:
    """Write each move to its status row if its guard holds (creating the row if it may); the moves written.

    All at once first, as a plan from the state just read moves everything it names; if some guard
    did not hold (the plan applied again, or stale), undone and done one by one to learn which.
    """
    params = [_move_params(m) for m in moves]
    creating = [p for m, p in zip(moves, params) if m.create]
    updating = [p for m, p in zip(moves, params) if not m.create]
    db.execute("SAVEPOINT moves")
    before = db.total_changes
    db.executemany(_MOVE_OR_CREATE, creating)
    db.executemany(_MOVE, updating)
    if db.total_changes - before == len(moves):
        db.execute("RELEASE moves")
        return list(moves)
    db.execute("ROLLBACK TO moves")
    db.execute("RELEASE moves")
    return [m for m, p in zip(moves, params) if db.execute(_MOVE_OR_CREATE if m.create else _MOVE, p).rowcount > 0]


def _fresh_moves(db: sqlite3.Connection, plan: WritePlan) -> tuple[list[MoveStatus], list[MoveStatus]]:
    """Create the status rows of the plan's fresh keys (WritePlan.fresh), each insert-if-absent, with no guard to
    check; NotFresh if one was there (the caller's savepoint then undoes the plan). The fresh keys' moves (all
    written) and the plan's other moves."""
    fresh = set(plan.fresh)
    creating: list[MoveStatus] = []
    others: list[MoveStatus] = []
    for m in plan.moves:
        (creating if m.create and (m.notification_id, m.channel) in fresh else others).append(m)
    before = db.total_changes
    _insert_rows(db, _CREATE_STATUS, [
        (m.notification_id, m.channel, m.status.value, m.step, m.updated_ms, m.detail, m.user_id, m.priority, m.created_ms)
        for m in creating
    ])
    all_created = db.total_changes - before == len(creating)
    if not all_created or len(creating) != len(fresh):  # (a fresh key without a move: read)
        created = {(m.notification_id, m.channel) for m in creating} if all_created else set()
        stored = {(k.notification_id, k.channel) for k in _key_states(db, list(fresh - created), False)}
        if stored:
            raise NotFresh(sorted(stored))
    return creating, others


def _apply(db: sqlite3.Connection, plan: WritePlan) -> None:
    """Apply a write plan on the writer connection, inside a transaction (run_jobs: a savepoint of its own).

    All or nothing, so nothing of a plan is ever applied in part: each move is written if its
    guard holds, then its history row, and the plan's counts of that move's key are counted only
    then (once per mark), so a plan applied again (its moves' guards no longer hold) counts nothing.
    The status rows of the plan's fresh keys are inserted if absent, with no guard: if one was there,
    NotFresh (and the savepoint undoes what was written).
    """
    if plan.inbox:
        _insert_rows(
            db, _INSERT_INBOX,
            [(i.user_id, i.notification_id, i.created_ms, i.seq, _inbox_encoder.encode(i)) for i in plan.inbox],
        )
    if plan.steps:
        _insert_rows(db, _INSERT_EVENT, [(s.notification_id, s.channel, s.status.value, s.at_ms, s.detail, s.step) for s in plan.steps])
    if plan.fresh:
        moved, others = _fresh_moves(db, plan)
        if others:
            moved += _moves(db, others)
    else:
        moved = _moves(db, plan.moves) if plan.moves else []
    if moved:
        # in the history's key order (user, created_ms, id, channel): each insert starts where the one before ended in
        # the B-tree (measured: 22.1 -> 21.1 us a row in batches of 100 distinct users, 15.2 -> 13.0 in batches of 1,000)
        rows: list[tuple[Any, ...]] = [
            (m.user_id, m.created_ms, m.notification_id, m.channel, m.status.value, m.priority, m.template,
             m.updated_ms, m.delivered_ms, m.error, m.detail)
            for m in moved
        ]
        rows.sort(key=_history_key)
        db.executemany(_UPSERT_LOG, rows)
    if plan.counts and moved:
        applied = {(m.notification_id, m.channel) for m in moved}
        stats: dict[tuple[str, str, int], list[int]] = {}
        marks: set[tuple[str, str, int, Counter]] = set()
        for c in plan.counts:
            mark = (c.notification_id, c.channel, c.round, c.counter)
            if (c.notification_id, c.channel) in applied and mark not in marks:
                marks.add(mark)
                stats.setdefault((c.date, c.channel, c.hour), [0, 0, 0])[_COUNTER_COLUMN[c.counter]] += 1
        db.executemany(_BUMP_STATS, [(*bucket, *counts) for bucket, counts in stats.items()])
    for field, sql in _SET_INBOX_TIME.items():
        rows = [(t.at_ms, t.user_id, t.notification_id) for t in plan.inbox_times if t.field is field]
        if rows:
            db.executemany(sql, rows)


def _key_states(db: sqlite3.Connection, keys: Sequence[StatusKey], timeline: bool) -> list[KeyState]:
    """The stored state of these (notification, channel) keys that have a row (with their round's timeline)."""
    wanted = set(keys)
    ids = (json.dumps(sorted({k[0] for k in wanted})),)
    found = {
        (nid, channel): (user_id, priority, created_ms, _STATUS[status], step // ROUND_SIZE)
        for nid, channel, user_id, status, priority, created_ms, step in db.execute(_STATUSES, ids)
        if (nid, channel) in wanted
    }
    if not timeline:
        return [KeyState(nid, channel, *state) for (nid, channel), state in found.items()]
    rows: dict[StatusKey, list[TimelineRow]] = {key: [] for key in found}
    for nid, channel, step, status, detail, at_ms in db.execute(_TIMELINES, ids):
        state = found.get((nid, channel))
        if state is not None and step // ROUND_SIZE == state[4]:  # the current round's rows only
            rows[(nid, channel)].append(TimelineRow(step, _STATUS[status], detail, at_ms))
    return [KeyState(nid, channel, *state, tuple(rows[(nid, channel)])) for (nid, channel), state in found.items()]


def _unread_through(db: sqlite3.Connection, user_id: str, through_id: str | None) -> UnreadThrough:
    """The unread entries (neither read nor archived) up to through_id (or the newest entry), in delivery order."""
    if through_id is None:
        top = db.execute(
            "SELECT seq, notification_id FROM web_inbox WHERE user_id = ? ORDER BY seq DESC, notification_id DESC LIMIT 1",
            (user_id,),
        ).fetchone()
    else:
        top = db.execute(
            "SELECT seq, notification_id FROM web_inbox WHERE user_id = ? AND notification_id = ?", (user_id, through_id)
        ).fetchone()
    if top is None:
        return UnreadThrough(user_id, through_id, (), None)
    ids = db.execute(
        "SELECT notification_id FROM web_inbox WHERE user_id = ? AND read_ms IS NULL AND archived_ms IS NULL"
        " AND (seq, notification_id) <= (?, ?) ORDER BY seq, notification_id",
        (user_id, *top),
    ).fetchall()
    return UnreadThrough(user_id, through_id, tuple(row[0] for row in ids), top[1])


def _connect_writer(path: Path) -> sqlite3.Connection:
    """The writer connection: WAL mode with synchronous=FULL, the schema created or migrated."""
    db = connect(path, "FULL")
    db.executescript(_SCHEMA)
    _migrate_inbox(db)
    _migrate_ranks(db)  # before the step columns are added: those compute their steps with the ranks of now
    _migrate_events(db)
    _migrate_status(db)
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
# A status's step: its rank in the round of its timeline's last step (the round was not stored before).
_MIGRATE_STATUS_STEPS = f"""
UPDATE notification_status AS s SET step = {_RANK_OF_STATUS} + {ROUND_SIZE} * COALESCE((
    SELECT MAX(step) FROM notification_events e WHERE e.notification_id = s.notification_id AND e.channel = s.channel
) / {ROUND_SIZE}, 0)
"""


def _migrate_ranks(db: sqlite3.Connection) -> None:
    """Move the stored steps of a file from before RANK_VERSION 2 (`scheduled` ranks after `accepted`: every other
    status moved up by one). The file's user_version holds the rank version its steps use (idempotent, one transaction)."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= RANK_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in ("notification_events", "notification_status"):
            if "step" in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(f"UPDATE {table} SET step = step + 1 WHERE status <> 'accepted'")
        db.execute(f"PRAGMA user_version = {RANK_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


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


def _migrate_status(db: sqlite3.Connection) -> None:
    """Store each status's step in a file from before it was stored (after _migrate_events; idempotent, one transaction)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(notification_status)")}
    if "step" not in columns:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE notification_status ADD COLUMN step INTEGER NOT NULL DEFAULT 0")
            db.execute(_MIGRATE_STATUS_STEPS)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


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


def _inbox_row(row: tuple[Any, ...]) -> InboxRow:
    """An InboxRow from (payload, read_ms, archived_ms)."""
    return InboxRow(_inbox_decoder.decode(row[0]), row[1], row[2])


class SqliteLogStore:
    """The LogStore port on one SQLite file."""

    READERS = 4  # read connections for the API's reads

    def __init__(self, path: Path, linger_s: float = 0.0) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._write_lock = trio.Lock()
        self._readers = ReadPool(path, self.READERS)
        self._plans: GroupCommit[Job[None], None] = GroupCommit(self._apply_jobs, linger_s=linger_s)

    @property
    def durable_writes(self) -> int:
        """Group-committed transactions made so far by `apply` (each one commit, one fsync)."""
        return self._plans.batches

    async def open(self) -> None:
        """Open the connections and create the schema if it is missing."""
        if self._writer is not None:
            return
        async with self._write_lock:
            self._writer = await trio.to_thread.run_sync(lambda: _connect_writer(self.path))
        await self._readers.open()

    async def close(self) -> None:
        """Close the connections (waiting for a running call); safe to call twice."""
        async with self._write_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                await trio.to_thread.run_sync(writer.close)
        await self._readers.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn on the writer connection in one worker-thread hop."""
        async with self._write_lock:
            db = self._writer
            if db is None:
                raise RuntimeError("SqliteLogStore is not open")
            return await trio.to_thread.run_sync(fn, db)

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one query on a read connection in one worker-thread hop."""
        if self._writer is None:
            raise RuntimeError("SqliteLogStore is not open")
        return await self._readers.run(lambda db: db.execute(sql, params).fetchall())

    async def _apply_jobs(self, jobs: list[Job[None]]) -> None:
        await self._write(lambda db: run_jobs(db, jobs))

    async def apply(self, plan: WritePlan) -> None:
        """Apply a write plan in one durable transaction (shared with the plans applied at the same time)."""
        if plan.is_empty():
            return
        if self._writer is None:
            raise RuntimeError("SqliteLogStore is not open")
        job: Job[None] = Job(lambda db: _apply(db, plan))
        await self._plans.commit([job])
        if job.error is not None:
            raise job.error

    async def key_states(self, keys: Sequence[StatusKey], *, timeline: bool = False) -> list[KeyState]:
        """The stored status of each of these (notification, channel) keys that has one (with its round's timeline)."""
        if not keys:
            return []
        return await self._write(lambda db: _key_states(db, keys, timeline))

    async def inbox_unread(self, user_id: str, through_id: str | None = None) -> UnreadThrough:
        """The user's unread entries delivered up to and including through_id (the newest entry when None)."""
        return await self._write(lambda db: _unread_through(db, user_id, through_id))

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
        where: list[str] = ["user_id = ?"]
        params: list[Any] = [user_id]
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
            params.extend(decode_cursor(cursor, user_id))
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
        return page, encode_cursor(user_id, last.created_ms, last.notification_id, last.channel)

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
            params.extend(decode_inbox_cursor(cursor, user_id))
        rows = await self._read(
            f"SELECT payload, read_ms, archived_ms, seq FROM web_inbox WHERE {' AND '.join(where)}"
            " ORDER BY seq DESC, notification_id DESC LIMIT ?",
            (*params, limit + 1),
        )
        page = [_inbox_row(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return page, None
        return page, encode_inbox_cursor(user_id, rows[limit - 1][3], page[-1].entry.notification_id)

    async def inbox_unread_count(self, user_id: str) -> int:
        """Entries neither read nor archived."""
        rows = await self._read(
            "SELECT COUNT(*) FROM web_inbox WHERE user_id = ? AND read_ms IS NULL AND archived_ms IS NULL", (user_id,)
        )
        return int(rows[0][0])

    async def daily_counts(self, date: str, channel: str) -> dict[str, int]:
        """{'sent', 'delivered', 'failed'} summed over the hours of a UTC date."""
        rows = await self._read(
            "SELECT COALESCE(SUM(sent_count), 0), COALESCE(SUM(delivered_count), 0),"
            " COALESCE(SUM(failed_count), 0) FROM daily_notification_stats WHERE date = ? AND channel = ?",
            (date, channel),
        )
        sent, delivered, failed = rows[0]
        return {"sent": sent, "delivered": delivered, "failed": failed}
