"""The log store's write plan: what the Recorder decided, as plain operations a backend applies.

The Recorder (actors/recorder.py) reads the state it needs through the LogStore port
(`KeyState`: a (notification, channel)'s current status, and its round's timeline when an
event is placed against it; the inbox rows an inbox change names), decides with the pure planner
(actors/domain/write_planner.py) and hands the backend a `WritePlan`. A backend applies
it without deciding anything: every operation is either insert-if-absent or a write
guarded by a condition the plan states, so applying a plan twice, or again after a crash
in the middle of it, changes nothing more than applying it once (see each operation, and
docs/architecture.md, "The Recorder and the log store").

The order of a plan's parts is the order a backend without transactions applies them in:

1. `inbox`: web inbox entries, insert-if-absent (a user's row per notification);
2. `steps`: timeline rows, insert-if-absent per (notification, channel, step, status, detail);
3. `counts`: counted transitions, each counted once per (notification, channel, round, counter),
   each with the move of its (notification, channel) in the same plan;
4. `moves`: status moves, each applied only if the stored step is one it may move from
   (to each copy of the status a backend keeps: its by-user history before its status row);
5. `inbox_times`: read and archived times, set only where unset.

Everything before the moves only adds what is missing, and the moves come last but one, so
a crash leaves each status where it was or where the plan moves it: planning the same
events again from there gives the same operations, which find their rows (and marks)
there and add nothing, and moves that then complete (a key already moved meets its events
again as repeats and late steps). (One exception, harmless: a client's ack that came before
the event creating its row in the same batch is dropped the first time and, planned again
after a crash that left the row created, moves it: the user's own ack, counted once.
Another, not handled: a key whose events include a replay from the dead-letter queue after
others of its own in one write (a dead-lettering, then its replay): once its move landed,
its status is in the round the replay started, and planned again the events before the
replay read as steps of that round, since an event carries no round. The Recorder cuts a
group before a write with such a replay, so only one write can hold both; the embedded
backend applies a plan in one transaction and never meets it; a backend without
transactions would need events that carry their round: see `events_before_a_replay` in
tests/actors/test_write_planner.py.) The
inbox times come last because what the planner decides from them (which entries a read
changes, and so which `read` statuses to record) must not be lost: an inbox time set means
the status moves it implies are applied already.
"""

from __future__ import annotations

import enum

import msgspec

from .lifecycle import Status
from .messages import InboxEntry

StatusKey = tuple[str, str]  # (notification_id, channel)


class Counter(str, enum.Enum):
    """The daily counters (daily_notification_stats): a transition into one of these counts once per round."""

    SENT = "sent"  # into sent, delivered, opened or read
    DELIVERED = "delivered"  # into delivered, opened or read
    FAILED = "failed"  # into failed or dead_lettered


class TimelineRow(msgspec.Struct, frozen=True, gc=False):
    """One row of a (notification, channel)'s attempt timeline, as the planner reads it."""

    step: int  # protocol.lifecycle.position(round, status)
    status: Status
    detail: str
    at_ms: int


class KeyState(msgspec.Struct, frozen=True, gc=False):
    """What the planner needs of one stored (notification, channel): its status and its round's timeline."""

    notification_id: str
    channel: str
    user_id: str
    priority: str
    created_ms: int
    status: Status
    round: int  # replays from the dead-letter queue so far (the status's round)
    timeline: tuple[TimelineRow, ...] | None = None  # the rows of the current round, in any order (None: not read)


class InboxState(msgspec.Struct, frozen=True):
    """An entry of a user's inbox as the planner reads it: whether it is read, archived."""

    user_id: str
    notification_id: str
    read: bool
    archived: bool


class UnreadThrough(msgspec.Struct, frozen=True):
    """The unread entries (neither read nor archived) of a user delivered up to `top`, in delivery order.

    `through` is what was asked (None: up to the newest entry); `top` the entry it resolved to
    (None: the inbox is empty, or has no such entry).
    """

    user_id: str
    through: str | None
    ids: tuple[str, ...]
    top: str | None


class InboxAction(str, enum.Enum):
    READ = "read"
    READ_ALL = "read_all"
    ARCHIVE = "archive"


class InboxChange(msgspec.Struct, frozen=True):
    """A change of a user's inbox asked of the Recorder: mark read these ids, mark all read (through an id), archive."""

    user_id: str
    action: InboxAction
    at_ms: int
    ids: tuple[str, ...] = ()  # READ and ARCHIVE
    through: str | None = None  # READ_ALL: up to and including this entry (None: every entry)


class InboxChanged(msgspec.Struct, frozen=True):
    """What an InboxChange changed: the ids (in the order asked, or delivery order for READ_ALL); READ_ALL's newest id covered."""

    ids: tuple[str, ...]
    through: str | None = None


# -- the operations


class AddStep(msgspec.Struct, frozen=True, gc=False):
    """Insert a timeline row unless one with the same (notification_id, channel, step, status, detail) exists
    (the first one's at_ms stays)."""

    notification_id: str
    channel: str
    step: int
    status: Status
    detail: str
    at_ms: int


class CountOnce(msgspec.Struct, frozen=True, gc=False):
    """Count a transition in the daily counter (date, channel, hour, counter), once per
    (notification_id, channel, round, counter) however often the plan is applied.

    The plan's MoveStatus of the same (notification, channel) makes the transition (the planner
    counts only what it moves). A backend with transactions counts it in the transaction that
    applies that move, if the move applies (the embedded one). One without keeps a mark per
    (notification_id, channel, round, counter), inserted if absent, and bumps the counter only
    for a mark it newly inserted (or derives the counter from the marks); counts come before
    moves in the plan's order, so a crash between them leaves marks that the plan made again finds.
    """

    notification_id: str
    channel: str
    round: int
    counter: Counter
    date: str  # UTC YYYY-MM-DD of the transition
    hour: int  # UTC hour 0-23


class MoveStatus(msgspec.Struct, frozen=True, gc=False):
    """Set a (notification, channel)'s status if it may move there from the stored one.

    Applied to a stored row only if the row's step (protocol.lifecycle.position of its status
    in its round) is in `after`; to a missing row only if `create` (then user_id, priority and
    created_ms are stored too; otherwise they stay as stored). Never applied otherwise: a
    skipped move is not an error (it is applied already, or another writer moved the status
    first). Every copy of the status a backend keeps (the row by id, the user's history row)
    is moved under the same condition; `delivered_ms` is kept once set (the first delivery),
    `template` is kept when the move has none.
    """

    notification_id: str
    channel: str
    user_id: str
    priority: str
    created_ms: int
    status: Status
    step: int  # position(round, status) of the new status
    updated_ms: int
    detail: str
    after: frozenset[int]  # the stored steps this move applies from
    create: bool  # may create the row when there is none
    error: str = ""  # the history row's error_message (the detail of a failure)
    template: str = ""  # "welcome@3#B" of a templated notification
    delivered_ms: int | None = None


class InboxField(str, enum.Enum):
    READ = "read"
    ARCHIVED = "archived"


class SetInboxTime(msgspec.Struct, frozen=True):
    """Set an inbox entry's read or archived time, only where it is unset (the first time stays)."""

    user_id: str
    notification_id: str
    field: InboxField
    at_ms: int


class WritePlan(msgspec.Struct, frozen=True):
    """Operations to apply, in this order (module docstring): each part only after the one before.

    `fresh`: the (notification, channel) keys the plan was made for as having no stored status (the
    Recorder's fast path reads nothing for a key whose notification its writer has just made: the
    Ingress's `accepted`). It is a condition of the whole plan: if one of them has a status row, the
    backend applies nothing of it and raises reactor.ports.NotFresh; the Recorder then reads those keys
    and plans again. So a wrong guess (a retry with an Idempotency-Key's id, a topic send's copy expanded
    again after a crash) costs a second plan, never a row or a count.
    """

    inbox: tuple[InboxEntry, ...] = ()
    steps: tuple[AddStep, ...] = ()
    counts: tuple[CountOnce, ...] = ()
    moves: tuple[MoveStatus, ...] = ()
    inbox_times: tuple[SetInboxTime, ...] = ()
    fresh: tuple[StatusKey, ...] = ()

    def is_empty(self) -> bool:
        """Nothing to apply, nor to check (`fresh`)."""
        return not (self.inbox or self.steps or self.counts or self.moves or self.inbox_times or self.fresh)

    def operations(self) -> list[InboxEntry | AddStep | CountOnce | MoveStatus | SetInboxTime]:
        """Every operation in the order a backend without transactions applies them."""
        return [*self.inbox, *self.steps, *self.counts, *self.moves, *self.inbox_times]
