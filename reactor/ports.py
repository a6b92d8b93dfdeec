"""The ports: small typed interfaces, each with an embedded backend and a distributed one.

The backends live in reactor/backends/<engine>/ and are opened together by
reactor.backends.open_backends; everything above them is typed by these Protocols only.
Every backend of a port passes the same conformance suite (tests/conformance/).
The Bus is modelled on Kafka's semantics: partitions keyed by hash(key) (murmur2, as
Kafka's default partitioner), per-group committed offsets, commit after processing,
and assignment/revocation of partitions to a group member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncContextManager, AsyncIterator, Callable, Protocol, Sequence

from protocol.keys import SigningKey
from protocol.messages import InboxEntry
from protocol.write_plan import KeyState, StatusKey, UnreadThrough, WritePlan


@dataclass(frozen=True, slots=True)
class BusRecord:
    """One record of a bus partition, as fetched."""

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

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
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
    """Durable state besides the bus and the log: metadata (never secrets: the signing keys have
    a port of their own, SigningKeyStore), pending retries, the dead-letter queue and the send ledger."""

    async def get_meta(self, key: str) -> str | None: ...

    async def put_meta_if_absent(self, key: str, value: str) -> str:
        """Store unless present; returns the value now stored."""

    async def forget_meta(self, key: str) -> None:
        """Erase the entry so that no copy of its value stays in the store's files."""

    async def schedule(self, entry: Scheduled) -> None: ...

    async def unschedule(self, ids: Sequence[str]) -> None: ...

    async def scheduled(self) -> list[Scheduled]:
        """Every pending entry, earliest first."""

    async def dead_letter(self, entry: DeadLetter) -> int:
        """Add an entry (its id is ignored), replacing the one of the same (notification, channel) if there
        is one: the queue holds at most one entry per (notification, channel). Returns the id it got."""

    async def resolve_dead_letters(self, channel: str, notification_ids: Sequence[str]) -> list[str]:
        """Delete the channel's entries of these notifications (they were delivered after all);
        returns the notification ids that had one."""

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
class StoredKey:
    """An API key as stored: its id in clear, a SHA-256 digest of its secret, never the secret."""

    key_id: str
    digest: bytes
    scopes: tuple[str, ...]
    name: str
    created_ms: int
    revoked_ms: int | None = None
    last_used_ms: int | None = None
    rate_per_s: float | None = None  # None: the node's default
    burst: float | None = None
    bootstrap: bool = False  # the node's generated bootstrap key: every scope, no rate limit


class KeyStore(Protocol):
    """API keys (embedded: reactor/backends/embedded/key_store.py; the PostgreSQL Store later)."""

    async def add_key(self, key: StoredKey) -> bool:
        """Store a new key; False (and nothing stored) if its key_id is taken."""

    async def get_key(self, key_id: str) -> StoredKey | None: ...

    async def list_keys(self) -> list[StoredKey]:
        """Every key, revoked ones included, oldest first."""

    async def revoke_key(self, key_id: str, at_ms: int) -> StoredKey | None:
        """Mark the key revoked (a second revoke keeps the first time); the key as now stored, None if unknown."""

    async def touch_key(self, key_id: str, at_ms: int) -> None:
        """Record that the key was used at `at_ms`."""


class SigningKeyStore(Protocol):
    """The token-signing key ring: secrets, kept apart from every other datum (embedded: a 0600 file of its own)."""

    async def read_ring(self) -> tuple[list[SigningKey], str] | None:
        """(the keys, oldest first; the current kid), or None when no ring was ever written."""

    async def write_ring(self, keys: Sequence[SigningKey], current: str) -> None:
        """Replace the ring, durably (a crash leaves the old ring or the new one)."""


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One saved, immutable version of a template; `spec` is the JSON of protocol.template_schemas.TemplateSpec."""

    template_id: str
    version: int
    created_ms: int
    spec: bytes


class TemplateStore(Protocol):
    """Templates and their versions, one active per template (embedded: reactor/backends/embedded/template_store.py)."""

    async def create_template(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        """Save version 1 and make it active; None (nothing saved) if the template exists."""

    async def add_version(self, template_id: str, spec: bytes, at_ms: int) -> TemplateVersion | None:
        """Save the next version and make it active; None if there is no such template."""

    async def activate(self, template_id: str, version: int, at_ms: int) -> bool:
        """Make a saved version the active one (a rollback); False if there is no such version."""

    async def active_version(self, template_id: str) -> int | None: ...

    async def get_version(self, template_id: str, version: int) -> TemplateVersion | None: ...

    async def versions(self, template_id: str) -> list[tuple[int, int]]:
        """(version, created_ms) of every version, newest first ([] for an unknown template)."""


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A push device of a user: a token belongs to one user (registering it again moves it)."""

    user_id: str
    platform: str  # fcm | apns
    token: str
    registered_ms: int


class UserStore(Protocol):
    """Users' preferences (the JSON of protocol.preferences.Preferences) and push devices
    (embedded: reactor/backends/embedded/user_store.py)."""

    async def get_preferences(self, user_id: str) -> bytes | None: ...

    async def put_preferences(self, user_id: str, document: bytes, at_ms: int) -> None: ...

    async def update_preferences(self, user_id: str, change: Callable[[bytes | None], bytes], at_ms: int) -> bytes:
        """Atomically replace the document with change(current); returns the new one."""

    async def add_device(self, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
        """Register (or move, or refresh) a token; past max_per_user the oldest go.

        Returns the registrations displaced: the token's own if another user had it, and the evicted ones.
        """

    async def remove_device(self, user_id: str, token: str) -> bool:
        """Forget the user's token; False if the user had no such token."""

    async def devices(self, user_id: str) -> list[DeviceRow]:
        """The user's devices, oldest registration first."""


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
    template: str = ""  # "welcome@3#B" when rendered from a template (statuses() and history() fill it)


@dataclass(frozen=True, slots=True)
class EventRow:
    channel: str
    status: str
    at_ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class InboxRow:
    """An inbox entry and its state (read_ms, archived_ms: None until it happens)."""

    entry: InboxEntry
    read_ms: int | None
    archived_ms: int | None


class InvalidCursor(ValueError):
    """A cursor the backend did not hand out (or cannot read any more): the routes answer 400 naming `cursor`.

    Cursors are opaque tokens owned by each backend: callers pass back the `next cursor` a page
    returned, never build or parse one.
    """


class LogStore(Protocol):
    """Statuses, attempt timelines, users' histories, daily counters and the web inbox.

    The Recorder (actors/recorder.py) is its only writer: it reads the state its planner needs
    (`key_states`, `inbox_unread`, `inbox_get`), decides everything (actors/domain/write_planner.py)
    and hands the backend a write plan (`apply`). A backend decides nothing: it applies the plan's
    operations as they are stated (protocol/write_plan.py).
    """

    async def apply(self, plan: WritePlan) -> None:
        """Apply a write plan durably: once this returns, a crash loses none of it.

        What a backend must guarantee, operation by operation (protocol/write_plan.py):
        - InboxEntry, AddStep: inserted unless their key is there (the stored one stays);
        - CountOnce: counted once per (notification, channel, round, counter), however often
          it is applied (with transactions: in the one that applies its key's move, if the move
          applies; without: a mark inserted if absent, the counter bumped only for a new mark);
        - MoveStatus: written to every copy of the status (`statuses`, `history`) only where the
          stored step is in `after`, or there is no row and `create` is set; never otherwise
          (a skipped move is not an error);
        - SetInboxTime: set only where unset.
        So applying a plan twice, or again after a crash part-way, gives what applying it once
        gives. A backend with transactions applies a plan in one (the embedded one does); one
        without applies the parts in the plan's order (`WritePlan.operations()`), each operation
        atomic on its own (a conditional write, e.g. a lightweight transaction, for a move).
        """

    async def key_states(self, keys: Sequence[StatusKey], *, timeline: bool = False) -> list[KeyState]:
        """The stored status of each of these (notification, channel) keys that has a row (the others are
        left out) and its round; with `timeline`, the timeline rows of that round too (else None).
        It sees every plan applied before."""

    async def inbox_unread(self, user_id: str, through_id: str | None = None) -> UnreadThrough:
        """The user's entries neither read nor archived, delivered up to and including through_id (the newest
        entry when None), in delivery order, and the entry that bound resolved to (None: none such)."""

    async def statuses(self, notification_id: str) -> list[StatusRow]: ...

    async def events(self, notification_id: str) -> list[EventRow]:
        """The attempt timeline: by channel, each in lifecycle order (rounds, then steps), then by time."""

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
        """The user's notifications, newest first; returns (rows, next cursor).

        `cursor` is a `next cursor` this backend returned (None: the first page); InvalidCursor otherwise.
        """

    async def inbox_after(self, user_id: str, after_id: str | None, limit: int = 500) -> list[InboxEntry]:
        """Web notifications delivered after after_id (all retained ones when None or unknown), oldest first."""

    async def inbox_get(self, user_id: str, notification_id: str) -> InboxRow | None:
        """One entry of the user's inbox with its read state; None if it is not (yet) there."""

    async def inbox_page(
        self, user_id: str, *, unread: bool = False, archived: bool = False, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[InboxRow], str | None]:
        """The user's inbox newest first (delivery order): the entries not archived, or only the archived ones
        when `archived`.

        `unread` keeps the unread ones; returns (rows, next cursor); InvalidCursor on a cursor this backend
        did not return.
        """

    async def inbox_unread_count(self, user_id: str) -> int:
        """Entries neither read nor archived."""

    async def daily_counts(self, date: str, channel: str) -> dict[str, int]:
        """{'sent': n, 'delivered': n, 'failed': n} for a UTC date YYYY-MM-DD."""

    async def close(self) -> None: ...
