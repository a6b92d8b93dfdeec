"""The ports: small typed interfaces, each with an embedded backend and a distributed one.

Every backend of a port passes the same conformance suite (tests/conformance/).
The Bus is modelled on Kafka's semantics: partitions keyed by hash(key) (murmur2, as
Kafka's default partitioner), per-group committed offsets, commit after processing,
and assignment/revocation of partitions to a group member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncContextManager, AsyncIterator, Protocol, Sequence

from protocol.messages import InboxEntry, StatusEvent


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Assignment:
    """A change of the partitions this group member owns."""

    assigned: frozenset[tuple[str, int]]
    revoked: frozenset[tuple[str, int]]


class Bus(Protocol):
    def partitions(self, topic: str) -> int:
        """Number of partitions of a topic (topics are declared up front)."""

    def partition_for(self, topic: str, key: bytes) -> int:
        """murmur2(key) % partitions, as Kafka's default partitioner."""

    async def produce(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
        """Append (topic, key, value) records; returns (partition, offset) of each.

        Returns only once every record is durable (embedded: fsynced; Kafka: acks=all).
        """

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        """Records from `offset` on, at least one: waits until there is one."""

    async def commit(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        """Durably record that the group processed everything before `next_offset`."""

    async def committed(self, group: str, topic: str, partition: int) -> int:
        """The group's committed next offset (0 when it never committed)."""

    async def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next produced record will get."""

    def assignments(self, group: str, topics: Sequence[str]) -> AsyncIterator[Assignment]:
        """Join the group; yields each change of this member's partitions."""


class State(Protocol):
    async def put_if_absent(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        """Store `value` unless the key exists; returns the existing value, or None if stored."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def take_tokens(self, key: str, n: float, capacity: float, refill_per_s: float) -> float:
        """Atomically take n tokens from the bucket `key`; returns 0.0 if taken, else seconds to wait."""

    async def publish(self, channel: str, message: bytes) -> int:
        """Send to every subscriber of the channel; returns how many got it."""

    def subscribe(self, channel: str) -> AsyncContextManager[AsyncIterator[bytes]]: ...


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A bus record to produce at `due_ms` (wall clock): a retry, later quiet hours and scheduled_at."""

    id: str
    due_ms: int
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int  # assigned by the store
    channel: str
    notification_id: str
    user_id: str
    error: str
    attempts: int
    created_ms: int
    dead_ms: int
    record: bytes  # the Delivery as it was last attempted, with its attempt history


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which dead letters: every given criterion must match; none given means all."""

    ids: tuple[int, ...] | None = None
    channel: str | None = None
    notification_id: str | None = None
    before_ms: int | None = None


class Store(Protocol):
    """Durable state besides the bus and the log: metadata and secrets, pending retries,
    the dead-letter queue and the send ledger (templates, preferences and keys later)."""

    async def get_meta(self, key: str) -> str | None: ...

    async def put_meta_if_absent(self, key: str, value: str) -> str:
        """Store unless present; returns the value now stored."""

    async def schedule(self, entry: Scheduled) -> None: ...

    async def unschedule(self, ids: Sequence[str]) -> None: ...

    async def scheduled(self) -> list[Scheduled]:
        """Every pending entry, earliest first."""

    async def dead_letter(self, entry: DeadLetter) -> int:
        """Add an entry (its id is ignored); returns the id it got."""

    async def dead_letters(self, selection: DlqFilter, after_id: int = 0, limit: int = 100) -> list[DeadLetter]:
        """Entries matching `selection` with id > after_id, oldest first."""

    async def discard_dead_letters(self, ids: Sequence[int]) -> int:
        """Delete these entries; returns how many existed."""

    async def dead_letter_count(self, channel: str | None = None) -> int: ...

    async def sent_status(self, notification_id: str, channel: str) -> str | None:
        """The status the send ledger holds for this (notification, channel), if it was sent."""

    async def mark_sent(self, notification_id: str, channel: str, status: str, at_ms: int) -> None:
        """Durably record a send (and the status the provider answered) in the ledger."""


@dataclass(frozen=True, slots=True)
class StatusRow:
    notification_id: str
    user_id: str
    channel: str
    status: str
    priority: str
    created_ms: int
    updated_ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class EventRow:
    channel: str
    status: str
    at_ms: int
    detail: str


class LogStore(Protocol):
    async def record(self, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry] = ()) -> None:
        """Apply status events and inbox entries in one transaction.

        An event moves a (notification, channel) status only along legal lifecycle edges
        (protocol.lifecycle); an illegal or repeated one is kept in the attempt timeline
        only if it is new, and never moves the status back. Daily counters are updated.
        """

    async def statuses(self, notification_id: str) -> list[StatusRow]: ...

    async def events(self, notification_id: str) -> list[EventRow]: ...

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
        """The user's notifications, newest first; returns (rows, next cursor)."""

    async def inbox_after(self, user_id: str, after_id: str | None, limit: int = 500) -> list[InboxEntry]:
        """Web notifications with id > after_id (all retained ones when None), oldest first."""

    async def daily_counts(self, date: str, channel: str) -> dict[str, int]:
        """{'sent': n, 'delivered': n, 'failed': n} for a UTC date YYYY-MM-DD."""

    async def close(self) -> None: ...
