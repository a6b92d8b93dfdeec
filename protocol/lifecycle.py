"""The notification lifecycle, per channel, its legal transitions, and the attempt timeline's order.

    accepted -> queued -> sent -> delivered -> opened -> read   (opened/read: web)
       |          |        |
       |          +--------+--> failed | dead_lettered
       |          |
       |          +--> cancelled            (DELETE /v1/notifications/{id}: held by quiet hours or a retry)
       +--> scheduled -> queued ...        (send_at: held until then; the Scheduler produces it)
                  |
                  +--> cancelled            (DELETE before it fired)
                  |
                  +--> digested             (collected into a digest: carried by the digest's notification)

A status only moves forward along these edges. Skipping ahead along a path is legal
(a web notification can go from sent straight to read when the user reads it in the
inbox before any client acked it), going back or leaving a final status is not.

One edge exists only for an operator's replay of the dead-letter queue:
dead_lettered -> queued. It is never taken by a late or redelivered event, only by an
event marked as a replay; it starts a new *round* of the lifecycle.

What each status means per channel, and which ones settle a channel's delivery
(`final_statuses`):

| status | email, sms, push, webhook | web (the in-app inbox) |
| --- | --- | --- |
| queued | on the bus, waiting for the provider (or a retry, quiet hours) | on the bus |
| sent | handed to the provider | stored in the user's inbox (pushed to any live session): **final** |
| delivered | the provider took it (the sandbox wrote it): **final** | seen by a client: a WebSocket ack, or handed over by SSE or long-poll |
| opened, read | | read: marked read in the inbox |
| failed, dead_lettered | **final** | **final** |
| scheduled | held until its `send_at` (the Scheduler's entry `send:<id>:<channel>`) | the same |
| cancelled | cancelled before it went out: **final** | **final** |
| digested | sent as part of a digest: the detail names the notification that carried it (`in <id>`): **final** | the same |

The web channel follows in-app inboxes (Knock: sent, seen, read; Courier: delivered to
the inbox is delivered): once the notification is in the inbox, delivery is done, and
`delivered` and `read` record what the user did with it. There is no expiry: an unseen
web notification stays `sent` (its inbox row is kept until it is archived).

The attempt timeline (`timeline_step`, `position`) is kept in lifecycle order, whatever
order the events arrive in: each row sorts by its round, then by its status's `RANK`
(strictly increasing along every edge), then by time. So a step that arrives after a
later one (the consumer's `sent` after the client's immediate ack, Ingress's `accepted`
after the consumer's batch) is placed before it, never after, and shown at the later
step's time at the latest (the log store clamps it, so times never go back either).
"""

from __future__ import annotations

import enum
from functools import cache

from .channels import Channel


class Status(str, enum.Enum):
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    READ = "read"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    DIGESTED = "digested"


EDGES: dict[Status, frozenset[Status]] = {
    Status.ACCEPTED: frozenset({Status.QUEUED, Status.SCHEDULED}),
    Status.SCHEDULED: frozenset({Status.QUEUED, Status.CANCELLED, Status.DIGESTED}),
    Status.QUEUED: frozenset({Status.SENT, Status.FAILED, Status.DEAD_LETTERED, Status.CANCELLED}),
    Status.SENT: frozenset({Status.DELIVERED, Status.FAILED, Status.DEAD_LETTERED}),
    Status.DELIVERED: frozenset({Status.OPENED, Status.READ}),
    Status.OPENED: frozenset({Status.READ}),
    Status.READ: frozenset(),
    Status.FAILED: frozenset(),
    Status.DEAD_LETTERED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.DIGESTED: frozenset(),
}

# A channel's delivery is settled once it reaches one of these, on every channel.
FINAL: frozenset[Status] = frozenset(
    {Status.DELIVERED, Status.OPENED, Status.READ, Status.FAILED, Status.DEAD_LETTERED, Status.CANCELLED, Status.DIGESTED}
)
# The web channel's delivery is settled once the notification is in the inbox (`sent`).
WEB_FINAL: frozenset[Status] = FINAL | {Status.SENT}


def final_statuses(channel: Channel) -> frozenset[Status]:
    """The statuses that settle this channel's delivery (see the table above)."""
    return WEB_FINAL if channel is Channel.WEB else FINAL


def is_final(channel: Channel, status: Status) -> bool:
    return status in final_statuses(channel)


class IllegalTransition(ValueError):
    def __init__(self, current: Status, new: Status) -> None:
        super().__init__(f"illegal status transition {current.value} -> {new.value}")
        self.current = current
        self.new = new


REPLAY_EDGES: dict[Status, frozenset[Status]] = {Status.DEAD_LETTERED: frozenset({Status.QUEUED})}


@cache
def reachable(current: Status) -> frozenset[Status]:
    """Every status reachable from `current` by one or more forward edges."""
    seen: set[Status] = set()
    frontier = list(EDGES[current])
    while frontier:
        status = frontier.pop()
        if status not in seen:
            seen.add(status)
            frontier.extend(EDGES[status])
    return frozenset(seen)


def can_advance(current: Status | None, new: Status, *, replay: bool = False) -> bool:
    if current is None or new in reachable(current):
        return True
    return replay and new in REPLAY_EDGES.get(current, frozenset())


def advance(current: Status | None, new: Status, *, replay: bool = False) -> Status:
    """Return `new` if moving there from `current` is legal, else raise IllegalTransition."""
    if current is not None and not can_advance(current, new, replay=replay):
        raise IllegalTransition(current, new)
    return new


# -- the attempt timeline

# Each status's place along the lifecycle: strictly increasing along every edge. `scheduled` came
# between accepted and queued: the ranks after it moved up by one (RANK_VERSION 2; the embedded log
# store moves the stored steps of a file from before, reactor/backends/embedded/log_store.py).
RANK: dict[Status, int] = {
    Status.ACCEPTED: 0,
    Status.SCHEDULED: 1,
    Status.QUEUED: 2,
    Status.SENT: 3,
    Status.DELIVERED: 4,
    Status.OPENED: 5,
    Status.READ: 6,
    Status.FAILED: 7,
    Status.DEAD_LETTERED: 8,
    Status.CANCELLED: 9,
    Status.DIGESTED: 10,  # after every other: no stored step moves
}
RANK_VERSION = 2
ROUND_SIZE = 100  # positions per round (a replay starts the next round); room for statuses to come


class Step(str, enum.Enum):
    """What an event is to the timeline of a (notification, channel) whose status is `current`."""

    ADVANCE = "advance"  # a legal move forward: the status changes, a new step
    REPLAYED = "replayed"  # an operator's replay out of dead_lettered: the status changes, a new round starts
    REPEAT = "repeat"  # the current status again with news (a retry's `queued` with its next attempt)
    LATE = "late"  # an earlier step that arrived after a later one: placed before that one, never after
    CONFLICT = "conflict"  # off the path from the current status (failed after delivered): kept in the timeline only


def timeline_step(current: Status | None, new: Status, *, replay: bool = False) -> Step:
    """Classify an event against the current status (None: the first event)."""
    if current is None or new in reachable(current):
        return Step.ADVANCE
    if replay and new in REPLAY_EDGES.get(current, frozenset()):
        return Step.REPLAYED
    if new is current:
        return Step.REPEAT
    if current in reachable(new):
        return Step.LATE
    return Step.CONFLICT


def position(round_: int, status: Status) -> int:
    """Where a status of a round sorts in the timeline: by round, then along the lifecycle."""
    return round_ * ROUND_SIZE + RANK[status]


def round_of(position_: int) -> int:
    return position_ // ROUND_SIZE
