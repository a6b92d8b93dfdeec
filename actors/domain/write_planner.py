"""The Recorder's rules, pure: status events and inbox changes in, a write plan (protocol/write_plan.py) out.

`Planner` is given the state it needs, read through the LogStore port (the current status
of each (notification, channel) the batch names, the inbox rows an inbox change names),
then the batch's messages in order (`record`, `change_inbox`); it asks for the round's
timeline of the keys with an event placed against it (`timelines_needed`), and builds one
`WritePlan`. It decides everything a backend used to decide:

- Lifecycle (protocol.lifecycle): an event moves a status only along a legal edge
  (`timeline_step`); a replay from the dead-letter queue starts a new round, once (the
  replay event redelivered finds its row at the head of the round: a late step, not a
  second replay); a late or conflicting step is kept in the timeline at its lifecycle
  place, shown at the time the first later step of its round was reached at the latest.
- Client events (an ack, a read: `StatusEvent.client`) only move a row that exists and is
  their user's, and only forward: one that would move nothing is dropped whole.
- Counters: each transition into sent, delivered (or later) and failed counts once per
  round, in the UTC (date, hour) of the event that made it.
- Inbox: entries to add; read and archived times set where unset, what changed answered,
  and a read recorded as the web channel's `read` status (a client event).

Keys recorded as fresh (`record(..., fresh=True)`: new notifications, no stored state given)
are planned directly where their events each advance the status (`_plan_fresh`: the Ingress's
`accepted` + `queued`), as the step-by-step planning would plan them from no state, and the
plan names them (WritePlan.fresh: a backend refuses it whole if one is stored after all).

The plan is idempotent by construction (protocol/write_plan.py): rows are keyed and
inserted if absent, counts are keyed by the transition they count, status moves are
guarded by the steps they may move from. Nothing here reads a clock or does I/O: tests/actors/test_write_planner.py applies
its plans, again and after a crash in the middle, against a model of a store without
transactions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache

from protocol.channels import Channel
from protocol.ids import notification_id_ms
from protocol.lifecycle import RANK, ROUND_SIZE, Status, Step, position, reachable, round_of, timeline_step
from protocol.messages import InboxEntry, StatusEvent
from protocol.write_plan import (
    AddStep,
    CountOnce,
    Counter,
    InboxAction,
    InboxChange,
    InboxChanged,
    InboxField,
    InboxState,
    KeyState,
    MoveStatus,
    SetInboxTime,
    StatusKey,
    UnreadThrough,
    WritePlan,
)

_SENT_OR_LATER = frozenset({Status.SENT, Status.DELIVERED, Status.OPENED, Status.READ})
_DELIVERED_OR_LATER = frozenset({Status.DELIVERED, Status.OPENED, Status.READ})
_FAILED = frozenset({Status.FAILED, Status.DEAD_LETTERED})

READ_DETAIL = "marked read"  # the detail of the `read` status an inbox read records

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_EPOCH = dt.date(1970, 1, 1)


@lru_cache(maxsize=1024)
def _utc_date(day: int) -> str:
    """The UTC date YYYY-MM-DD of a day count since the epoch."""
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


def counter_bucket(at_ms: int) -> tuple[str, int]:
    """The (UTC date, hour) daily counter a transition at `at_ms` counts in."""
    day, rest = divmod(at_ms, _DAY_MS)
    return _utc_date(day), rest // _HOUR_MS


def counters_entered(old: Status | None, new: Status) -> tuple[Counter, ...]:
    """The counters a status change enters (sent, delivered, failed), each counted once per round."""
    return _ENTERED[(old, new)]


def _entered(old: Status | None, new: Status) -> tuple[Counter, ...]:
    entered = []
    if new in _SENT_OR_LATER and old not in _SENT_OR_LATER:
        entered.append(Counter.SENT)
    if new in _DELIVERED_OR_LATER and old not in _DELIVERED_OR_LATER:
        entered.append(Counter.DELIVERED)
    if new in _FAILED and old not in _FAILED:
        entered.append(Counter.FAILED)
    return tuple(entered)


_ENTERED = {(old, new): _entered(old, new) for old in (None, *Status) for new in Status}
_REACHABLE = {s: reachable(s) for s in Status}


@cache
def _predecessors(status: Status) -> frozenset[Status]:
    """The statuses `status` is reachable from by forward edges."""
    return frozenset(s for s in Status if status in reachable(s))


@lru_cache(maxsize=4096)
def move_after(target_round: int, target: Status, start_step: int | None) -> frozenset[int]:
    """The stored steps a move to (target_round, target) applies from: where the planner found the status,
    any step of the same round the target is reachable from, and a dead-lettering of the round before
    (the move took the replay edge)."""
    after = {position(target_round, s) for s in _predecessors(target)}
    if start_step is not None:
        after.add(start_step)
        if round_of(start_step) < target_round:
            after.add(position(target_round - 1, Status.DEAD_LETTERED))
    return frozenset(after)


_CHANNEL = {c: c.value for c in Channel}


class _NeedsTimeline(Exception):
    """A key's event is placed against its round's timeline, which was not read."""


class _Key:
    """One (notification, channel) while the batch is planned: the stored state, then what the batch did to it."""

    __slots__ = (
        "notification_id", "channel", "user_id", "priority", "created_ms", "status", "round", "start_step", "rows",
        "complete", "moved", "updated_ms", "detail", "template", "delivered_ms",
    )

    def __init__(
        self, notification_id: str, channel: str, user_id: str, priority: str, created_ms: int, status: Status,
        round_: int, start_step: int | None, rows: dict[tuple[int, Status, str], int], complete: bool,
    ) -> None:
        self.notification_id, self.channel, self.user_id, self.priority = notification_id, channel, user_id, priority
        self.created_ms, self.status, self.round = created_ms, status, round_
        self.start_step = start_step  # the stored step (None: no row when planned)
        self.rows = rows  # the round's timeline and the batch's: (step, status, detail) -> at_ms
        self.complete = complete  # rows holds the stored timeline (it was read, or there is no stored row)
        self.moved = False
        self.updated_ms = 0
        self.detail = ""
        self.template = ""
        self.delivered_ms: int | None = None

    @classmethod
    def stored(cls, k: KeyState) -> _Key:
        if k.timeline is None:
            return cls(k.notification_id, k.channel, k.user_id, k.priority, k.created_ms, k.status, k.round,
                       k.round * ROUND_SIZE + RANK[k.status], {}, False)
        rows = {(r.step, r.status, r.detail): r.at_ms for r in k.timeline}
        return cls(k.notification_id, k.channel, k.user_id, k.priority, k.created_ms, k.status, k.round,
                   k.round * ROUND_SIZE + RANK[k.status], rows, True)

    def _rows(self) -> dict[tuple[int, Status, str], int]:
        if not self.complete:
            raise _NeedsTimeline((self.notification_id, self.channel))
        return self.rows

    def has_row(self, step: int, status: Status, detail: str) -> bool:
        return (step, status, detail) in self._rows()

    def late_at_ms(self, step: int, at_ms: int) -> int:
        """When to show a step placed before others: its time, or when the first later step of its round was reached."""
        end = (step // ROUND_SIZE + 1) * ROUND_SIZE
        later = [t for (s, _, _), t in self._rows().items() if step < s < end]
        return min(at_ms, *later) if later else at_ms


class Planner:
    """Plans one batch: give it the state read for the batch, then the messages in order, then take `plan()`.

    The stored timelines are needed only for keys with a late, conflicting or replayed event: read the
    states without them, feed the messages, read the timelines of `timelines_needed()` (which plans
    every key it can meanwhile) and give them with `add_timelines`, then take `plan()`.
    """

    def __init__(
        self,
        keys: Iterable[KeyState] = (),
        inbox: Iterable[InboxState] = (),
        unread: Iterable[UnreadThrough] = (),
    ) -> None:
        self._stored: dict[StatusKey, KeyState] = {(k.notification_id, k.channel): k for k in keys}
        self._keys: dict[StatusKey, _Key] = {key: _Key.stored(k) for key, k in self._stored.items()}
        self._queued: dict[StatusKey, list[StatusEvent]] = {}  # the batch's events per key, in order
        self._fresh: set[StatusKey] = set()  # keys first named by a fresh record, with no stored state given
        self._fresh_moves: dict[StatusKey, MoveStatus] = {}  # the move of each fresh key planned directly
        self._planned: dict[StatusKey, tuple[_Key | None, list[AddStep], list[CountOnce]]] = {}
        self._sealed = False  # planning began: no more messages
        self._key_list: list[StatusKey] | None = None  # the keys in order, once planning began (plan_keys)
        # the inbox rows read: (user, id) -> [read, archived]; updated by the batch's changes
        self._inbox: dict[tuple[str, str], list[bool]] = {
            (i.user_id, i.notification_id): [i.read, i.archived] for i in inbox
        }
        self._unread: dict[tuple[str, str | None], UnreadThrough] = {(u.user_id, u.through): u for u in unread}
        self._entries: list[InboxEntry] = []
        self._times: list[SetInboxTime] = []

    def record(self, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry] = (), *, fresh: bool = False) -> None:
        """Take status events and inbox entries (one RecordEvents) into the batch.

        `fresh`: their writer made these notifications just now (RecordEvents.fresh), so the keys they
        name first in the batch are taken to have no stored status (none is given for them: the Recorder
        read none) and are planned directly where their events allow (`_plan_fresh`); the plan names them
        all (WritePlan.fresh), those it creates and those it leaves alone (a client's event dropped for want
        of a row), so that a backend applies nothing of it if one does have a status.
        """
        if self._sealed:
            raise RuntimeError("the batch is being planned: no more messages")
        self._entries.extend(inbox)
        queued = self._queued
        for e in events:
            key = (e.notification_id, _CHANNEL[e.channel])
            if key in queued:
                queued[key].append(e)
            else:
                queued[key] = [e]
                if fresh and key not in self._keys:
                    self._fresh.add(key)

    def plan_keys(self, start: int, count: int) -> int:
        """Plan keys `start` to `start + count` of the batch (in order) that can be planned from their status alone;
        where the next slice starts (`key_count` once done). `timelines_needed` then has only the rest to do: the
        Recorder plans a large batch this way, a slice at a time, the event loop free between slices."""
        self._sealed = True  # no more messages: the keys stay as listed
        if self._key_list is None:
            self._key_list = list(self._queued)
        for key in self._key_list[start : start + count]:
            if key not in self._planned and not self._may_need_timeline(key, self._queued[key]):
                self._attempt(key)  # False: it needs its timeline (timelines_needed names it)
        return min(start + count, len(self._queued))

    @property
    def key_count(self) -> int:
        """The (notification, channel) keys the batch's events name."""
        return len(self._queued)

    def timelines_needed(self) -> list[StatusKey]:
        """Plan every key of the batch that can be; the stored keys whose timeline it needs and was not given
        (those with a late, conflicting or replayed event: one placed against the round's rows)."""
        self._sealed = True
        needed = []
        for key, events in self._queued.items():
            if key not in self._planned and (self._may_need_timeline(key, events) or not self._attempt(key)):
                needed.append(key)
        return needed

    def _may_need_timeline(self, key: StatusKey, events: list[StatusEvent]) -> bool:
        """Whether a stored key's events, as far as its status alone tells, meet one placed against its round's rows."""
        k = self._keys.get(key)
        if k is None or k.complete:
            return False
        status = k.status
        for e in events:
            if e.client and e.user_id != k.user_id:
                continue
            if e.status in _REACHABLE[status]:
                status = e.status
            elif e.status is not status:  # a repeat needs no rows; late, conflicting and replayed ones do
                return True
        return False

    def add_timelines(self, keys: Iterable[KeyState]) -> None:
        """The stored state of some keys again, with their timelines (read after `timelines_needed`)."""
        for k in keys:
            key = (k.notification_id, k.channel)
            self._stored[key] = k
            self._keys[key] = _Key.stored(k)
            self._planned.pop(key, None)

    def _attempt(self, key: StatusKey) -> bool:
        """Plan one key's events; False (and its state as stored again) if it needs its timeline."""
        steps: list[AddStep] = []
        counts: list[CountOnce] = []
        if key in self._fresh and key not in self._keys:
            move = _plan_fresh(key, self._queued[key], steps, counts)
            if move is not None:
                self._fresh_moves[key] = move
                self._planned[key] = (None, steps, counts)
                return True
            steps.clear()
            counts.clear()
        try:
            k = self._plan_key(key, self._queued[key], steps, counts)
        except _NeedsTimeline:
            self._keys[key] = _Key.stored(self._stored[key])
            return False
        self._planned[key] = (k, steps, counts)
        return True

    def change_inbox(self, change: InboxChange) -> InboxChanged:
        """Take an inbox change (read, read all, archive) into the batch; what it changes, as answered once the
        plan is durable.

        A read records the web channel's `read` status of each entry it changes (a client event:
        it only moves the user's own existing row). Entries named that are not in the user's inbox
        (as read for this batch) change nothing.
        """
        user = change.user_id
        through = None
        if change.action is InboxAction.READ_ALL:
            unread = self._unread.get((user, change.through))
            if unread is None:
                raise KeyError(f"the unread entries of {user} through {change.through} were not read for this batch")
            candidates, through = unread.ids, unread.top
            field_ = InboxField.READ
        else:
            candidates = tuple(dict.fromkeys(change.ids))
            field_ = InboxField.READ if change.action is InboxAction.READ else InboxField.ARCHIVED
        changed = []
        for nid in candidates:
            state = self._inbox.get((user, nid))
            if change.action is InboxAction.READ_ALL:
                state = state or [False, False]  # listed unread by the store; the batch may have changed it since
                if state[0] or state[1]:
                    continue
            elif state is None or state[0 if field_ is InboxField.READ else 1]:
                continue
            state[0 if field_ is InboxField.READ else 1] = True
            self._inbox[(user, nid)] = state
            changed.append(nid)
            self._times.append(SetInboxTime(user, nid, field_, change.at_ms))
        if field_ is InboxField.READ:
            self.record([
                StatusEvent(nid, user, Channel.WEB, Status.READ, change.at_ms, detail=READ_DETAIL,
                            created_ms=notification_id_ms(nid), client=True)
                for nid in changed
            ])
        return InboxChanged(tuple(changed), through)

    def plan(self) -> WritePlan:
        """The batch's write plan."""
        self._sealed = True
        steps: list[AddStep] = []
        counts: list[CountOnce] = []
        moves: list[MoveStatus] = []
        for key in self._queued:
            if key not in self._planned and not self._attempt(key):
                raise RuntimeError(f"the timeline of {key} was not read (Planner.timelines_needed)")
            k, key_steps, key_counts = self._planned[key]
            steps += key_steps
            counts += key_counts
            fresh_move = self._fresh_moves.get(key)
            if fresh_move is not None:
                moves.append(fresh_move)
            elif k is not None and k.moved:
                moves.append(MoveStatus(
                    k.notification_id, k.channel, k.user_id, k.priority, k.created_ms, k.status,
                    k.round * ROUND_SIZE + RANK[k.status], k.updated_ms, k.detail,
                    move_after(k.round, k.status, k.start_step), k.start_step is None,
                    error=k.detail if k.status in _FAILED else "", template=k.template, delivered_ms=k.delivered_ms,
                ))
        return WritePlan(tuple(self._entries), tuple(steps), tuple(counts), tuple(moves), tuple(self._times), tuple(self._fresh))

    def _plan_key(
        self, key: StatusKey, events: list[StatusEvent], steps: list[AddStep], counts: list[CountOnce]
    ) -> _Key | None:
        """Apply a key's events of the batch, in order, to its state; the timeline rows and counts they add."""
        k = self._keys.get(key)
        nid, channel = key
        for e in events:
            if e.client and (k is None or k.user_id != e.user_id):
                continue  # a client's ack or read never creates a row, nor touches another user's
            status = e.status
            if k is None:
                old = None
                step = Step.ADVANCE
                k = self._keys[key] = _Key(
                    nid, channel, e.user_id, e.priority.value, e.created_ms or e.at_ms, status, 0, None, {}, True
                )
            else:
                old = k.status
                step = Step.ADVANCE if status in _REACHABLE[old] else timeline_step(old, status, replay=e.replay)
                if step is Step.REPLAYED and k.has_row(k.round * ROUND_SIZE + RANK[status], status, e.detail):
                    step = Step.LATE  # the replay that started this round, redelivered: already applied
                if e.client and step is not Step.ADVANCE:
                    continue  # a client's event that moves nothing (a second tab's ack, an ack after a read) adds nothing
                if step is Step.REPLAYED:
                    k.round += 1
            row_step, at_ms = k.round * ROUND_SIZE + RANK[status], e.at_ms
            if step is Step.LATE or step is Step.CONFLICT:  # it may sort before steps already there
                at_ms = k.late_at_ms(row_step, at_ms)
            row = (row_step, status, e.detail)
            if row not in k.rows:  # as the store keeps it: the first one
                k.rows[row] = at_ms
                steps.append(AddStep(nid, channel, row_step, status, e.detail, at_ms))
            if step is not Step.ADVANCE and step is not Step.REPLAYED:
                continue  # kept in the timeline; the status does not move
            k.status, k.moved, k.updated_ms, k.detail = status, True, e.at_ms, e.detail
            if e.template:
                k.template = e.template
            if status in _DELIVERED_OR_LATER and old not in _DELIVERED_OR_LATER:
                k.delivered_ms = e.at_ms
            entered = _ENTERED[(old, status)]
            if entered:
                date, hour = counter_bucket(e.at_ms)
                for counter in entered:
                    counts.append(CountOnce(nid, channel, k.round, counter, date, hour))
        return k


def _plan_fresh(key: StatusKey, events: list[StatusEvent], steps: list[AddStep], counts: list[CountOnce]) -> MoveStatus | None:
    """A key with no stored status whose events each advance it along the lifecycle (none a client's, the first one
    creating the row): its timeline rows and counts (added to `steps`, `counts`) and its move, as `Planner._plan_key`
    plans them from no stored state (tests/actors/test_write_planner.py checks it on random batches); None, having
    added nothing, if its events are not all such (`_plan_key` plans them then)."""
    first = events[0]
    status = first.status
    if first.client:
        return None
    if len(events) == 2:  # the Ingress's accepted + queued (or failed, scheduled): the common case, without a loop
        second = events[1]
        if second.client or second.status not in _REACHABLE[status]:
            return None
    nid, channel = key
    at_ms = first.at_ms
    created_ms = first.created_ms or at_ms
    old: Status | None = None
    rows: set[tuple[int, Status, str]] = set()
    added: list[AddStep] = []
    counted: list[CountOnce] = []
    template = ""
    delivered_ms: int | None = None
    detail = ""
    for e in events:
        status = e.status
        if old is not None and (e.client or status not in _REACHABLE[old]):
            return None
        at_ms, detail = e.at_ms, e.detail
        row = (RANK[status], status, detail)
        if row not in rows:
            rows.add(row)
            added.append(AddStep(nid, channel, row[0], status, detail, at_ms))
        if e.template:
            template = e.template
        if status in _DELIVERED_OR_LATER and old not in _DELIVERED_OR_LATER:
            delivered_ms = at_ms
        entered = _ENTERED[(old, status)]
        if entered:
            date, hour = counter_bucket(at_ms)
            counted.extend(CountOnce(nid, channel, 0, counter, date, hour) for counter in entered)
        old = status
    steps += added
    counts += counted
    return MoveStatus(
        nid, channel, first.user_id, first.priority.value, created_ms, status, RANK[status], at_ms, detail,
        move_after(0, status, None), True, error=detail if status in _FAILED else "", template=template,
        delivered_ms=delivered_ms,
    )


def inbox_keys(change: InboxChange, unread: UnreadThrough | None = None) -> dict[StatusKey, None]:
    """The (notification, web) statuses an inbox change may move (a read's `read`), in order: to read before planning it."""
    if change.action is InboxAction.ARCHIVE:
        return {}
    ids = unread.ids if change.action is InboxAction.READ_ALL and unread is not None else change.ids
    return dict.fromkeys((nid, Channel.WEB.value) for nid in ids)


def event_keys(events: Iterable[StatusEvent]) -> dict[StatusKey, None]:
    """The (notification, channel) statuses some events name, in order: to read before planning them."""
    return dict.fromkeys((e.notification_id, _CHANNEL[e.channel]) for e in events)

