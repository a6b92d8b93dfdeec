"""The Cassandra log store's tables: the seed's schema (docs/architecture.md), one table per query.

Every table's rows live `ttl_days` (default_time_to_live). The append-mostly, time-ordered
tables (the attempt timeline, the users' histories, the daily counts) use
TimeWindowCompactionStrategy with one-day windows: their rows are written within minutes of
their notification and expire together. The status rows and inbox entries, which change
later (a read, an archive), keep the default compaction.

- notification_status   the current status of each (notification, channel), with its `step`
                        (protocol.lifecycle.position), which a move's condition is checked against.
- notification_logs     a user's history: partitioned by user, clustered by created_ms DESC (then
                        notification, channel); a copy of the status with its own `step` (moved
                        under the same condition) and what only the history keeps (delivered_ms,
                        error_message, metadata['detail']).
- notification_events   the attempt timeline, one row per (notification, channel, step, status,
                        detail), `written` (microseconds) keeping the order rows of one step came in.
- count_marks           one row per counted transition (notification, channel, round, counter):
                        the first date and hour it was counted in.
- daily_notification_stats
                        the daily counters, counted by idempotent inserts: one row per mark under
                        its (date, channel, hour) partition; a count is the number of rows.
- web_inbox             a user's web notifications (msgspec JSON of InboxEntry) with read and
                        archived times.
"""

from __future__ import annotations

_TWCS = "{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}"


def tables(ttl_s: int) -> list[str]:
    """The CREATE TABLE statements (idempotent), in the keyspace in use."""
    return [
        f"""CREATE TABLE IF NOT EXISTS notification_status (
            notification_id text, channel text, user_id text, status text, step int, priority text,
            created_ms bigint, updated_ms bigint, detail text, template text,
            PRIMARY KEY ((notification_id), channel)
        ) WITH default_time_to_live = {ttl_s}""",
        f"""CREATE TABLE IF NOT EXISTS notification_logs (
            user_id text, created_ms bigint, notification_id text, channel text, status text, step int,
            priority text, template_id text, updated_ms bigint, delivered_ms bigint, error_message text,
            metadata map<text, text>,
            PRIMARY KEY ((user_id), created_ms, notification_id, channel)
        ) WITH CLUSTERING ORDER BY (created_ms DESC, notification_id DESC, channel DESC)
          AND compaction = {_TWCS} AND default_time_to_live = {ttl_s}""",
        f"""CREATE TABLE IF NOT EXISTS notification_events (
            notification_id text, channel text, step int, status text, detail text, at_ms bigint, written bigint,
            PRIMARY KEY ((notification_id), channel, step, status, detail)
        ) WITH compaction = {_TWCS} AND default_time_to_live = {ttl_s}""",
        f"""CREATE TABLE IF NOT EXISTS count_marks (
            notification_id text, channel text, round int, counter text, date text, hour int,
            PRIMARY KEY ((notification_id), channel, round, counter)
        ) WITH default_time_to_live = {ttl_s}""",
        f"""CREATE TABLE IF NOT EXISTS daily_notification_stats (
            date text, channel text, hour int, counter text, notification_id text, round int,
            PRIMARY KEY ((date, channel, hour), counter, notification_id, round)
        ) WITH compaction = {_TWCS} AND default_time_to_live = {ttl_s}""",
        f"""CREATE TABLE IF NOT EXISTS web_inbox (
            user_id text, notification_id text, seq bigint, created_ms bigint, payload blob,
            read_ms bigint, archived_ms bigint,
            PRIMARY KEY ((user_id), notification_id)
        ) WITH default_time_to_live = {ttl_s}""",
    ]
