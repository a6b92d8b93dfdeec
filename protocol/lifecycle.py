"""The notification lifecycle, per channel, and its legal transitions.

    accepted -> queued -> sent -> delivered -> opened -> read   (opened/read: web)
                  |        |
                  +--------+--> failed | dead_lettered

A status only moves forward along these edges. Skipping ahead along a path is legal
(a web notification can go from queued straight to delivered when the client acks a
frame that reached it through sync), going back or leaving a final status is not.

One edge exists only for an operator's replay of the dead-letter queue:
dead_lettered -> queued. It is never taken by a late or redelivered event, only by an
event marked as a replay.
"""

from __future__ import annotations

import enum
from functools import cache


class Status(str, enum.Enum):
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    READ = "read"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


EDGES: dict[Status, frozenset[Status]] = {
    Status.ACCEPTED: frozenset({Status.QUEUED}),
    Status.QUEUED: frozenset({Status.SENT, Status.FAILED, Status.DEAD_LETTERED}),
    Status.SENT: frozenset({Status.DELIVERED, Status.FAILED, Status.DEAD_LETTERED}),
    Status.DELIVERED: frozenset({Status.OPENED, Status.READ}),
    Status.OPENED: frozenset({Status.READ}),
    Status.READ: frozenset(),
    Status.FAILED: frozenset(),
    Status.DEAD_LETTERED: frozenset(),
}

# A channel's delivery is settled once it reaches one of these.
FINAL: frozenset[Status] = frozenset(
    {Status.DELIVERED, Status.OPENED, Status.READ, Status.FAILED, Status.DEAD_LETTERED}
)


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
