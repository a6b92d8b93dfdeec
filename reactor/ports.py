"""The ports: small typed interfaces, each with an embedded backend and a distributed one.

The backends live in reactor/backends/<engine>/ and are opened together by
reactor.backends.open_backends; everything above them is typed by these Protocols only.
Every backend of a port passes the same conformance suite (tests/conformance/suites/<port>.py,
run on every backend by tests/conformance/test_<port>.py; docs/architecture.md says how to
add a backend), and each suite is shown to fail on deliberately broken backends: what the
docstrings below promise is what the suites check.
The Bus is modelled on Kafka's semantics: partitions keyed by hash(key) (murmur2, as
Kafka's default partitioner), per-group committed offsets, commit after processing,
and assignment/revocation of partitions to a group member.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from typing import AsyncContextManager, AsyncGenerator, AsyncIterator, Callable, Literal, Protocol, Sequence

from protocol.keys import SigningKey
from protocol.messages import InboxEntry
from protocol.write_plan import KeyState, StatusKey, UnreadThrough, WritePlan
from reactor.circuit_breaker import BreakerConfig


class BusRecord(msgspec.Struct, frozen=True, gc=False):
    """One record of a bus partition, as fetched. (A msgspec Struct: built 14x faster than a frozen dataclass,
    ~0.08 us against ~1.1, which counted in a fetch of hundreds; immutable and compared by value all the same.)"""

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

        A record goes to partition_for(topic, key), after every record of that partition
        acknowledged before (and after those before it in the same call): offsets grow in
        that order. Returns only once every record is durable (embedded: fsynced; Kafka:
        acks=all): a crash after the return loses none of them.
        """

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        """Records from `offset` on, in offset order, at least one and never more than
        `max_records` (the consumer's maybe-sent window counts on it): waits until there is one."""

    async def commit(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        """Durably record that the group processed everything before `next_offset` (other groups keep theirs)."""

    async def committed(self, group: str, topic: str, partition: int) -> int:
        """The group's committed next offset (0 when it never committed): where a member starts,
        so what was fetched and not committed before a crash comes again."""

    async def end_offset(self, topic: str, partition: int) -> int:
        """Advisory, for lag figures and tests: the offset the next produced record will get.

        Nothing that decides a delivery may rest on it: the Kafka-protocol broker used in
        tests (Tansu) reports wrong end offsets after batched produces, so the conformance
        suite does not check it, and the consumer decides `maybe_sent` without it.
        """

    def assignments(self, group: str, topics: Sequence[str]) -> AsyncGenerator[Assignment, None]:
        """Join the group; yields each change of this member's partitions (closing the stream, aclose(), leaves the group).

        The first change assigns the member its share of every partition of `topics` (a lone
        member: all of them, once); a member's partitions change only when the group's
        membership does.
        """


# -- the Provider's gate, shared by its workers: answers of the State operations below --


@dataclass(frozen=True, slots=True)
class TokenLease:
    """The answer of `State.lease_tokens`."""

    lease_id: str  # "" when nothing was granted
    granted: int  # tokens held under this lease (0 to `want`)
    wait_s: float  # 0: spend them now; > 0: a reservation, spend them from wait_s on; inf with nothing granted: never
    free: float  # tokens in the bucket not leased to anyone, after this step (below 0: owed to reservations)


BreakerEvent = Literal["success", "failure", "release"]


@dataclass(frozen=True, slots=True)
class BreakerView:
    """The shared breaker after one step of `State.breaker_admit`, `breaker_report` or `breaker_read`.

    Times are relative (seconds from the State's `now`), so a caller on another clock can use them.
    """

    state: str  # as of now: "closed", "open" or "half_open" (an open breaker whose timeout ran out reads half_open)
    consecutive_failures: int  # closed: failures since the last success
    consecutive_successes: int  # half-open: probe successes so far
    retry_in_s: float  # open: seconds until a probe may go out; 0 otherwise
    probe_owner: str | None  # half-open: the owner holding the probe, if one is out
    opened: int  # transitions into open, ever
    admitted: int  # breaker_admit answers that admitted
    rejected: int  # breaker_admit answers that refused
    probes: int  # probes admitted
    stale_outcomes: int  # reports with no call to attribute them to
    allowed: bool = False  # breaker_admit: the call may go out
    probe: bool = False  # breaker_admit: ... and it is the half-open probe, now held by the caller
    transitions: tuple[str, ...] = ()  # the edges this step took, oldest first: "closed->open", "open->half_open", ...


class State(Protocol):
    """Shared, short-lived state. A TTL counts on the backend's clock (embedded: Trio's); a key is
    there until its TTL has passed, never a moment less, and absent after it."""

    async def put_if_absent(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        """Store `value` unless the key exists; returns the existing value, or None if stored.

        Atomic: of concurrent callers on one key exactly one stores, and the others get its
        value. An expired key is absent; an empty value is a value.
        """

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store `value` with this TTL, or none: a set replaces the value and the TTL."""

    async def delete(self, key: str) -> None: ...

    async def take_tokens(self, key: str, n: float, capacity: float, refill_per_s: float) -> float:
        """Atomically take n tokens from the bucket `key`; returns 0.0 if taken, else seconds to wait.

        A new bucket is full; it refills at `refill_per_s` up to `capacity`, never beyond.
        Concurrent takers together never get more than capacity + refill_per_s x elapsed,
        and a wait returned is long enough for the same take to succeed.
        """

    # -- the Provider's gate, shared by its workers (docs/reliability.md, "The gate") -------------------------
    # N workers of one provider share one token bucket and one circuit breaker through these four
    # operations. Each is one atomic step on one key, at the State's own time `now` (embedded: Trio's
    # clock; Redis: the server's TIME read inside the script), never a caller's clock: every answer
    # gives durations, not instants. The embedded State applies the pure machines of
    # reactor/gate_state.py under its lock; a Redis backend ports each as one Lua script over a hash
    # per key (the machines' fields) and, for the bucket, a sorted set of leases by expiry.

    async def lease_tokens(
        self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
        give_back: tuple[str, int] | None = None, reserve: int = 0,
    ) -> TokenLease:
        """Lease up to `want` whole tokens of the shared bucket `key` for `lease_s` seconds; give back an earlier lease.

        The bucket is `free` tokens (at `updated`) and the leases it has out, each (id, tokens,
        expires). Invariant: free + leased <= capacity, where leased is the sum of the leases'
        tokens: free tokens refill at `refill_per_s` up to `capacity - leased`, never above. One
        step, in this order:

        1. now = max(now, updated): a clock that went back mints nothing.
        2. Expiry: each lease with expires <= now, earliest first: refill free up to its
           `expires` (under the cap as it was), then drop the lease; its tokens are gone.
        3. Refill free up to now; updated = now.
        4. `give_back` (lease_id, unused): if that lease is still out, drop it and add
           min(max(unused, 0), its tokens) to free. An unknown or expired lease is ignored: its
           tokens were freed already, giving them back again would mint them.
        5. granted = min(want, floor(free)), wait_s = 0. If that is 0 and want > 0, reserve:
           granted = min(want, floor(capacity)) and wait_s = the seconds until free would reach
           `granted` if nothing else happened (the other leases' expiries included; the
           refill is capped as in 2); inf, and nothing granted, if floor(capacity) is 0.
           With `reserve` r > 0 (a bulk lane's request, docs/reliability.md "Priority lanes")
           instead: granted = min(want, floor(free) - r); if that is <= 0, nothing is granted
           or reserved (no debt) and wait_s = the seconds until free would reach r + 1 as
           above (0 if want is 0; inf if r + 1 exceeds the capacity). Bulk callers so never
           take the last r tokens; callers with r = 0 (the critical lane) take them, and reserve.
        6. If granted > 0: free -= granted (free may go below 0: a reservation's debt) and a
           new lease of `granted` tokens expiring at now + wait_s + lease_s is out, under an
           id never used before for this key.

        The caller spends a lease's tokens from wait_s after it got the answer until
        wait_s + lease_s after it sent the request (so never before the refill paid for them,
        never after the lease expired here), and gives back what it did not spend (with its
        next request, or at stop) or lets it expire. Then, across all callers, the tokens
        spent in any window [t1, t2] are at most capacity + refill_per_s * (t2 - t1). Every
        request with want > 0 gets a slice, at once or reserved: callers waiting on an empty
        bucket queue up rather than race. `want` = 0 with `give_back` only gives back; with
        neither it reads `free`. A changed capacity or rate applies from this step on; the
        leases out are kept.
        """

    async def breaker_admit(self, key: str, config: BreakerConfig, owner: str, probe_lease_s: float) -> BreakerView:
        """May `owner` call the provider now? The shared breaker `key` answers, and a half-open probe is leased.

        The breaker is a reactor.circuit_breaker.BreakerSnapshot plus the probe's holder and the
        probe lease's expiry (a missing key is a closed breaker). One step: if a probe is out
        and its lease expired (expires <= now), it is released (the pure machine's
        `release_probe`: a prober that died frees the slot); then the pure machine's
        `allow(now)` under `config`: closed admits, open refuses until its timeout, half-open
        admits one probe at a time. An admitted half-open call is the probe, held by `owner`
        until now + probe_lease_s. The view says `allowed` and `probe`.
        """

    async def breaker_report(self, key: str, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool) -> BreakerView:
        """Report how a call `owner` made went: "success", "failure", or "release" (no word on the provider's health).

        One step: the probe lease's expiry as in breaker_admit; then, if the stored state is
        half-open, the event counts only when `probe` is set and `owner` holds the probe;
        any other outcome then is stale (counted in stale_outcomes; a "release" by another
        owner is ignored). Otherwise the pure machine's record_success / record_failure /
        release_probe applies (closed counts every outcome; open counts them as stale). A
        probe's outcome ends the probe lease.
        """

    async def breaker_read(self, key: str, config: BreakerConfig) -> BreakerView:
        """The shared breaker as of now (the probe lease's expiry as in breaker_admit applied first)."""

    async def publish(self, channel: str, message: bytes) -> int:
        """Send to every subscriber of the channel; returns how many got it.

        A subscriber gets every message published after it subscribed, in order; one that
        does not keep up loses messages rather than slow the publisher down.
        """

    def subscribe(self, channel: str) -> AsyncContextManager[AsyncIterator[bytes]]:
        """Subscribed once the block is entered, until it ends; never replays earlier messages."""

    # -- recent pushes for resume: capped lists, per user, with a TTL, so a client resumes on any edge

    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        """Append `item` to the list `key`, keep only its newest `max_items`, and make the whole list
        expire `ttl_s` after this append; atomically (Redis: RPUSH, LTRIM key -max_items -1 and EXPIRE
        in one script). Once it returns, `recent(key)` from any client sees the item until it is trimmed
        or the list expires. A backend may drop whole lists under memory pressure, least recently
        appended first (embedded: a bound on all items together; Redis: its maxmemory policy).
        """

    async def recent(self, key: str) -> list[bytes]:
        """The items of the list `key`, oldest first; [] if there is none (never appended to, or expired)."""


class PortUnavailable(Exception):
    """A port's server cannot be reached now (a Redis down, a timeout): the call failed fast and may be
    retried later; the port recovers by itself once the server is back. The front end answers 503."""


class AppendUncertain(PortUnavailable):
    """A bus append whose outcome is unknown: it was not acknowledged in time (the Ingress's deadline) or the
    client gave up on it, but its records may still be written later (a Kafka producer keeps retrying them).
    Nothing may be acknowledged on it; the front end answers 503 (actors/ingress.py says how a retry with an
    Idempotency-Key makes the same notifications, not second ones)."""


class BrokerLost(Exception):
    """A node's subscription ended: what was published to it since may not have arrived (a Redis
    connection dropped, or a subscriber that fell behind its buffer and was cut off)."""


class BrokerSubscription(Protocol):
    """One node's subscription to the Broker (Redis: one pub/sub connection), opened by Broker.subscriber()."""

    async def subscribe(self, user_id: str) -> None:
        """Receive the user's messages from now on: once this returns, every message published
        afterwards reaches this subscription. Subscribing again to a user is a no-op (a set, not a count)."""

    async def unsubscribe(self, user_id: str) -> None:
        """Stop receiving the user's messages (a no-op for a user not subscribed)."""

    def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """(user_id, message) as they come, in publish order for each user.

        Raises BrokerLost if the subscription is cut off (a subscriber that does not read is
        never waited for: past its buffer it is dropped, as Redis drops a pub/sub client over
        its output buffer limit). The caller then treats everything since as possibly missed."""


class Broker(Protocol):
    """Routes a message for a user (a web delivery, an inbox-state change) to the nodes holding that
    user's live sessions, as centrifuge's Broker: a channel per user, and each node subscribes to the
    channels of the users it holds sessions of (Redis pub/sub: PUBLISH/SUBSCRIBE on `herald:user:<id>`;
    memory: reactor/backends/embedded/broker.py).

    At most once, never stored: a node that subscribes after a publish does not get it (a resuming
    client finds it in the inbox or the recent pushes, written before the publish). A publish never
    waits for a subscriber to read.
    """

    async def publish(self, user_id: str, message: bytes) -> int:
        """Send to every subscription to the user now; returns how many there are (nodes, not sessions:
        0 means no node holds a live session of the user)."""

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Publish each (user_id, message) as `publish` would, in this order (so in order per user), in one step
        (Redis: one pipeline, one round trip; memory: one checkpoint); returns each one's count of subscriptions.
        A page of a topic's web deliveries goes out this way (actors/clients/web.py)."""

    def subscriber(self) -> AsyncContextManager[BrokerSubscription]:
        """This node's subscription, subscribed to nobody yet; leaving the block unsubscribes it from everyone."""


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


@dataclass(frozen=True, slots=True)
class FanoutJob:
    """A topic send waiting for, or under, its fan-out (actors/fanout.py): written before the send's 202.

    `request` is the send as accepted (the JSON of protocol.api.NotificationRequest); `cursor` the
    last user id expanded ("" before the first batch); `counts` the JSON of the per-channel counts
    so far. `total` is the topic's subscriber count when the send was accepted.
    """

    id: str  # the topic send's notification id
    topic: str
    request: bytes
    created_ms: int
    total: int
    cursor: str = ""
    expanded: int = 0
    counts: bytes = b"{}"
    done_ms: int | None = None  # set once every subscriber is expanded


@dataclass(frozen=True, slots=True)
class DigestEvent:
    """One event collected into a user's digest (actors/digester.py): a send that named a digest key.

    `body` is the send as accepted (the JSON of protocol.api.NotificationRequest); the Store never reads it.
    """

    notification_id: str  # the event's own notification id: unique, an event is stored once
    user_id: str
    digest_key: str
    at_ms: int
    body: bytes


@dataclass(frozen=True, slots=True)
class DigestWindow:
    """A user's digest window as the Store holds it: open (`fire_id` "") or closed and being fired (leased)."""

    user_id: str
    digest_key: str
    fire_id: str  # "" while open; once claimed, the least notification id of its events (the same on every claim)
    due_ms: int
    deadline_ms: int
    count: int
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True)
class DigestFire:
    """A closed window handed to a claimer: its events, earliest first (at_ms, then notification id)."""

    window: DigestWindow
    events: tuple[DigestEvent, ...]


class Store(Protocol):
    """Durable state besides the bus and the log: metadata (never secrets: the signing keys have
    a port of their own, SigningKeyStore), pending retries, the dead-letter queue and the send ledger."""

    async def get_meta(self, key: str) -> str | None: ...

    async def put_meta_if_absent(self, key: str, value: str) -> str:
        """Store unless present; returns the value now stored."""

    async def forget_meta(self, key: str) -> None:
        """Erase the entry so that no copy of its value stays in the store's files."""

    async def schedule(self, entry: Scheduled) -> None:
        """Add a pending entry, durably; one of the same id is replaced, its lease with it (claimable once due)."""

    async def unschedule(self, ids: Sequence[str]) -> None:
        """Remove these entries (whoever holds them): the Scheduler calls it once their records are durably on the bus."""

    async def scheduled(self) -> list[Scheduled]:
        """Every pending entry, earliest first: for inspection and tests (the Scheduler claims; it never loads them all)."""

    # -- the Scheduler's claims: any number of Schedulers share one Store, each fires only what it claimed

    async def claim_due(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[Scheduled]:
        """Lease up to `limit` entries due at `now_ms` to `owner` until now_ms + lease_ms; returns them, earliest due first.

        An entry is claimable when due_ms <= now_ms and no other owner's lease runs at now_ms (never
        leased, its lease ended at or before now_ms, or `owner` holds it: a claimer restarted in place
        takes back what it held). Atomic against every other claimer: while a lease runs, the entry is
        handed to no other owner. A claim removes nothing: the claimer produces the records, then
        unschedules them; if it dies in between, its entries are claimable again when the lease ends
        (produced twice at worst, never lost; the send ledger stops a second send). PostgreSQL:
        `UPDATE scheduled SET owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM scheduled
        WHERE due_ms <= $now AND (lease_until <= $now OR owner = $1) ORDER BY due_ms, id LIMIT $n
        FOR UPDATE SKIP LOCKED) RETURNING ...` (lease_until: a column, 0 when never leased).
        """

    async def cancel_scheduled(self, notification_id: str, channel: str, id_prefixes: Sequence[str], at_ms: int) -> bool:
        """Cancel what the Store holds of one (notification, channel), atomically against the Scheduler's claims;
        True if the pair is cancelled (now, or by an earlier call).

        One transaction: if the send ledger holds the pair as `cancelled`, True (a repeat); as anything
        else (sent), False. Else, among the pending entries whose id starts with one of `id_prefixes`: if
        any was ever claimed (its lease running or ended: it is being produced, or was by a claimer that
        died and will be again), False and nothing is removed; if none is pending, False (it left the
        Store: on the bus); else they are removed and the ledger marks the pair `cancelled` (at_ms), True.
        So a cancel and a fire exclude each other: an entry is either removed before any claim (never
        produced) or claimed before the cancel (produced, and the cancel says so).
        """

    async def next_due_ms(self) -> int | None:
        """The earliest time claim_due may hand out an entry: the least, over pending entries, of
        max(due_ms, the end of its lease); None when nothing is pending.

        Read from indexes (due_ms; the leased entries), never by loading every entry.
        """

    async def dead_letter(self, entry: DeadLetter) -> int:
        """Add an entry (its id is ignored), replacing the one of the same (notification, channel) if there
        is one: the queue holds at most one entry per (notification, channel). Returns the id it got.

        Ids grow: each entry, a replacing one too, gets an id above every id given before, so a
        replay that read the replaced entry and discards its id cannot discard the new one.
        """

    async def resolve_dead_letters(self, channel: str, notification_ids: Sequence[str]) -> list[str]:
        """Delete the channel's entries of these notifications (they were delivered after all);
        returns the notification ids that had one."""

    async def dead_letters(self, selection: DlqFilter, after_id: int = 0, limit: int = 100) -> list[DeadLetter]:
        """At most `limit` entries matching `selection` with id > after_id, by id (oldest first): the last
        id is the cursor of the next page. `ids=()` matches none; `before_ms` means dead_ms < before_ms."""

    async def discard_dead_letters(self, ids: Sequence[int]) -> int:
        """Delete these entries; returns how many existed."""

    async def dead_letter_count(self, channel: str | None = None) -> int: ...

    # -- topics: subscriptions, and the fan-out jobs of topic sends (actors/fanout.py) -----------------------

    async def add_subscribers(self, topic: str, user_ids: Sequence[str]) -> int:
        """Subscribe these users to the topic, durably, in one transaction; returns how many were not subscribed
        before (a repeat, in the call or from before, counts once)."""

    async def remove_subscribers(self, topic: str, user_ids: Sequence[str]) -> int:
        """Unsubscribe them, durably; returns how many were subscribed."""

    async def subscribers(self, topic: str, after: str, limit: int) -> list[str]:
        """At most `limit` of the topic's subscribers with a user id above `after` ("" for the first page), in
        ascending user id order (byte order of their UTF-8): the last one is the next page's `after`. Following
        the pages gives every subscriber that stays subscribed throughout exactly once."""

    async def subscriber_count(self, topic: str) -> int: ...

    async def add_fanout(self, job: FanoutJob) -> None:
        """Store a new job, durably, unclaimed (one of the same id is kept as it is: a retried send writes nothing)."""

    async def fanout(self, job_id: str) -> FanoutJob | None: ...

    async def claim_fanout(self, owner: str, now_ms: int, lease_ms: int) -> FanoutJob | None:
        """Lease the oldest unfinished job no other owner's lease covers at now_ms (as claim_due: never leased,
        its lease ended, or `owner` holds it) to `owner` until now_ms + lease_ms; None when there is none.
        Atomic against every other claimer."""

    async def checkpoint_fanout(self, owner: str, job: FanoutJob, now_ms: int, lease_ms: int) -> bool:
        """Durably record the job's progress (cursor, expanded, counts, done_ms) and renew the lease to now_ms +
        lease_ms, if `owner` is still the job's owner (no other claimed it since, after the lease ended); False,
        and nothing written, if another owner took it over: that one goes on from the last checkpoint."""


    # -- digests: events collected per (user, digest key) in windows, fired by lease (actors/digester.py) -------------

    async def add_digest_event(self, event: DigestEvent, due_ms: int, deadline_ms: int, max_events: int) -> None:
        """Collect the event into the open window of its (user, key), durably; a repeat of its notification id adds nothing.

        No open window: one opens with this event, deadline_ms = `deadline_ms`, due_ms = min(`due_ms`,
        `deadline_ms`) (event.at_ms if max_events <= 1). An open one: count + 1, first/last_ms widened, due_ms = min(`due_ms`, its own
        deadline_ms), and at most event.at_ms once the count reaches `max_events` (a full window fires at
        once: a claim never loads more than a few past it) (actors/domain/digests.py `merge`). A window
        being fired is never added to: the event opens the next one. PostgreSQL, in one transaction: `INSERT INTO digest_events ... ON CONFLICT
        (notification_id) DO NOTHING`, and only if a row went in, `INSERT INTO digests (user_id, digest_key,
        fire_id, due_ms, deadline_ms, count, first_ms, last_ms) VALUES ($u, $k, '', $opening_due,
        $deadline, 1, $at, $at) ON CONFLICT (user_id, digest_key, fire_id) DO UPDATE SET due_ms =
        LEAST(EXCLUDED.due_ms, digests.deadline_ms, CASE WHEN digests.count + 1 >= $max THEN EXCLUDED.last_ms
        ELSE digests.deadline_ms END), count = digests.count + 1, first_ms = LEAST(...), last_ms = GREATEST(...)`.
        """

    async def claim_digests(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[DigestFire]:
        """Close and lease to `owner` (until now_ms + lease_ms) up to `limit` windows, earliest first; with their events.

        Claimable: an open window with due_ms <= now_ms (it closes: fire_id becomes the least notification
        id of its events, the events move with it, and a later event opens a new window), or a closed one
        whose lease ended at or before now_ms or that `owner` holds (a claimer restarted in place). Atomic
        against every other claimer and add_digest_event: an event is in exactly one window, a closed window
        goes to one owner at a time, and a closed window's events never change. PostgreSQL: `SELECT ... FROM
        digests WHERE (fire_id = '' AND due_ms <= $now) OR (fire_id <> '' AND (lease_until <= $now OR owner =
        $o)) ORDER BY ... LIMIT $n FOR UPDATE SKIP LOCKED`, then UPDATE digests and digest_events SET fire_id.
        """

    async def finish_digest(self, fire_id: str) -> None:
        """Remove a fired window and its events (its notification is durably on the bus); unknown: nothing."""

    async def cancel_digest_event(self, notification_id: str, channels: Sequence[str], at_ms: int) -> bool:
        """Take an event out of its open window, atomically against claim_digests; True if it is cancelled (now, or before).

        One transaction: the send ledger holds (notification_id, channels[0]) as `cancelled`: True (a
        repeat); the event is in an open window: removed (the window's count less one; an emptied window is
        removed), and the ledger marks each channel `cancelled` at at_ms: True. Else False: its window was
        claimed (the digest carries it) or there is no such event.
        """

    async def digest_windows(self, user_id: str) -> list[DigestWindow]:
        """The user's windows, open and being fired, by due time (GET /v1/users/{id}/digests)."""

    async def next_digest_ms(self) -> int | None:
        """The earliest time claim_digests may hand out a window: the least of the open windows' due_ms and the closed
        ones' lease ends; None when there is no window."""

    async def sent_status(self, notification_id: str, channel: str) -> str | None:
        """The status the send ledger holds for this (notification, channel), if it was sent."""

    async def mark_sent(self, notification_id: str, channel: str, status: str, at_ms: int) -> None:
        """Durably record a send (and the status the provider answered) in the ledger; a second
        mark of the same (notification, channel) keeps the first."""

    async def mark_sent_many(self, marks: Sequence[tuple[str, str, str, int]]) -> None:
        """`mark_sent` of each (notification_id, channel, status, at_ms), made durable together (one write)."""


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
        """Every key, revoked ones included, oldest (created_ms) first."""

    async def revoke_key(self, key_id: str, at_ms: int) -> StoredKey | None:
        """Mark the key revoked (a second revoke keeps the first time); the key as now stored, None if unknown."""

    async def touch_key(self, key_id: str, at_ms: int) -> None:
        """Record that the key was used at `at_ms` (never moves last_used back; an unknown key: nothing)."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The token-signing key ring as stored: the keys oldest first, the current kid, and the ring's version."""

    keys: tuple[SigningKey, ...]
    current: str
    version: int  # 1 for the first ring written, one more at each write: what write_ring compares


class SigningKeyStore(Protocol):
    """The token-signing key ring: secrets, kept apart from every other datum, shared by every node of the
    Store (embedded: a 0600 file of its own, for the one node of its data dir and the offline CLI).

    Every node holds a copy of the ring (actors/services/credentials.py) and sees a change made
    elsewhere within a bounded time: it reads the ring again when a token names a kid it does not
    know (rate-limited), and every `refresh_s` where the Store is shared. Changes are compare-and-set
    on the version, so two nodes rotating at once both keep their new key (the one that loses the
    race reads again and redoes its change).
    """

    async def read_ring(self) -> KeyRing | None:
        """The ring as last written, or None when no ring was ever written."""

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        """Replace the ring if its version is still `expected_version` (None: only if no ring was ever
        written); durably: a crash leaves the old ring or the new one. Returns the ring as written (its
        version one more), or None and nothing written if another writer changed it first.
        PostgreSQL: `UPDATE signing_keys SET ring = $1, version = version + 1 WHERE version = $2`
        (`INSERT ... ON CONFLICT DO NOTHING` for the first ring); the row count says which happened.
        """


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
        """Save the next version (the number after the latest, not after the active one) and make it
        active; None if there is no such template. Concurrent saves get distinct numbers."""

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
        """Atomically replace the document with change(current); returns the new one (concurrent
        updates each see the other's result: none is lost)."""

    async def add_device(self, device: DeviceRow, max_per_user: int) -> list[DeviceRow]:
        """Register (or move, or refresh) a token; past max_per_user the oldest go.

        Returns the registrations displaced: the token's own if another user had it, and the evicted ones.
        """

    async def remove_device(self, user_id: str, token: str) -> bool:
        """Forget the user's token; False if the user had no such token."""

    async def devices(self, user_id: str) -> list[DeviceRow]:
        """The user's devices, oldest registration first."""

    async def users(self, user_ids: Sequence[str]) -> dict[str, UserRow]:
        """Many users read at once (a topic fan-out's batch): each asked user's preferences and devices,
        as get_preferences and devices would answer them; every asked id is a key (a user never seen: no
        document, no devices)."""


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user as UserStore.users reads them: the preferences document (None if never set) and devices, oldest first."""

    preferences: bytes | None
    devices: list[DeviceRow]


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
    """A cursor the backend did not hand out for this user's listing (or cannot read any more): the routes
    answer 400 naming `cursor`.

    Cursors are opaque tokens owned by each backend: callers pass back the `next cursor` a page
    returned, never build or parse one. A backend refuses with this exception, never another: a
    malformed cursor, another user's, or the other listing's (a history cursor given to the inbox).
    """


class NotFresh(Exception):
    """A write plan's `fresh` keys (protocol/write_plan.py, WritePlan.fresh) are not all without a stored status:
    nothing of the plan was applied. `keys`: those found stored (all of them, or at least one)."""

    def __init__(self, keys: Sequence[StatusKey]) -> None:
        super().__init__(f"{len(keys)} key(s) planned as fresh have a stored status, e.g. {keys[0] if keys else None}")
        self.keys = tuple(keys)


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
        - SetInboxTime: set only where unset;
        - `fresh`: if one of those keys has a stored status, nothing of the plan is applied and NotFresh is
          raised (checked before any write by a backend without transactions; a crash part-way through
          leaves what a plan planned from no stored status leaves, which planning again finds).
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

        `cursor` is a `next cursor` this backend returned for this user's history (None: the first page);
        InvalidCursor otherwise (malformed, another user's, the inbox's). Following the cursors gives every
        row once, also when notifications arrive between two pages.
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
        did not return for this user's inbox (malformed, another user's, the history's). As for history(),
        following the cursors gives every entry once, also when entries arrive meanwhile.
        """

    async def inbox_unread_count(self, user_id: str) -> int:
        """Entries neither read nor archived."""

    async def daily_counts(self, date: str, channel: str) -> dict[str, int]:
        """{'sent': n, 'delivered': n, 'failed': n} for a UTC date YYYY-MM-DD."""

    async def close(self) -> None: ...
