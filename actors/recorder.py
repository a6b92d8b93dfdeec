"""Recorder: the LogStore's only writer; it plans (pure) and the backend applies.

It takes one message (RecordEvents: status events and inbox entries; ChangeInbox: read,
read all, archive), then whatever else is already queued or arrives within `linger_s` of
the first (up to `batch` events: its callers' group commit, one fsync for them all; it
lingers only when the batch before had company, so a lone caller is not slowed), and
writes them all with one plan: it reads the state the planner needs through the port
(the current status of every (notification, channel) named, the inbox rows an inbox
change names, then the round's timeline of those with a late, conflicting or replayed
event), plans the batch (actors/domain/write_planner.py: lifecycle,
timeline order, counters, inbox changes; a large one `PLAN_SLICE` keys at a time with a
checkpoint between, so a 1,000-item batch's 2,000 keys do not hold the event loop for all
of it: larger slices than the Ingress's, since each slice lets other work allocate while
the plan's objects live, and the collector's young passes then cost more: 64 keys cost
~6 us of CPU per notification in batches of 1,000, 256 ~1-2 us), and hands the plan to `LogStore.apply`, one
durable transaction on the embedded backend. Only then does it answer every message that
asked for a reply: a PartitionConsumer commits its bus offsets after that answer, an
inbox route answers its client with what changed.

A batch is planned from one read of the state, so everything it names is read first. Two
cuts make it a few groups, each read, planned and applied in turn (one more transaction
each, only then): an inbox change of a user whose inbox got entries earlier in the group
starts a group (the planner decides a change from the inbox rows read, which those entries
are not in yet), and so do status events after an inbox change (a change is planned from
what was there before it: planning the group again after a crash half-way must not let
it see what came after it), and so does a write with a replay from the dead-letter queue
of a (notification, channel) with events earlier in the group (planned again after a
crash that let the replay's move land, those events would read as steps of the round the
replay started: protocol/write_plan.py).

Fresh keys: the keys a `fresh` RecordEvents (the Ingress's, of notifications it has just
made) names first in a group are not read; they are planned as having no stored status, on
the condition, stated in the plan (WritePlan.fresh), that none has one: a backend that finds
one applies nothing of the plan (NotFresh), and the group is read and planned again in full
(a retry's reused id, a topic copy expanded again: a second plan, never a row or a count).

`write_batch` (and `record_events`, `change_inbox` for one write) is the same path without
the actor (tests, tools): what it writes is what the Recorder would; `split_batch` and
`plan_writes` are its two steps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import trio

from protocol.messages import InboxEntry, StatusEvent
from protocol.write_plan import InboxAction, InboxChange, InboxChanged, InboxState, StatusKey, UnreadThrough, WritePlan
from reactor.mailbox import Mailbox
from reactor.port_health import PortHealth
from reactor.ports import LogStore, NotFresh, PortUnavailable
from reactor.until_available import until_available

from .domain.write_planner import Planner, event_keys, inbox_keys
from .messages import RecordEvents, RecorderMessage

log = logging.getLogger("herald.recorder")

PLAN_SLICE = 256  # keys planned between two checkpoints in a large group (a few ms of the loop; issue 10 item 6)
EVENT_SLICE = 2048  # events taken in (their keys, then the planner's queues) between two checkpoints
Write = RecordEvents | InboxChange  # what a batch is made of: status events with inbox entries, or an inbox change


def _size(message: RecorderMessage) -> int:
    if isinstance(message, RecordEvents):
        return len(message.events) + len(message.inbox)
    return max(1, len(message.change.ids))


def split_batch(batch: Sequence[Write]) -> list[range]:
    """The batch cut into groups planned from one read each: in a group, every RecordEvents comes before every
    inbox change, no inbox change is of a user whose inbox gets entries in the group, and no replay event is of
    a (notification, channel) with events in an earlier write of the group."""
    groups: list[range] = []
    start = 0
    added: set[str] = set()  # users whose inbox gets entries in the current group
    named: set[StatusKey] = set()  # the (notification, channel) keys of the current group's events
    changing = False  # the current group has an inbox change
    for i, w in enumerate(batch):
        if isinstance(w, InboxChange):
            cut = w.user_id in added
            changing = True
        else:
            cut = changing or any(e.replay and (e.notification_id, e.channel.value) in named for e in w.events)
        if cut:
            groups.append(range(start, i))
            start, added, named, changing = i, set(), set(), isinstance(w, InboxChange)
        if isinstance(w, RecordEvents):
            added.update(e.user_id for e in w.inbox)
            named.update(event_keys(w.events))
    if start < len(batch):
        groups.append(range(start, len(batch)))
    return groups


class _Work:
    """Counts a plan's work, and lets the event loop run each EVENT_SLICE events of it (a small group: never)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = 0

    async def did(self, events: int) -> None:
        self.done += events
        if self.done >= EVENT_SLICE:
            self.done = 0
            await trio.lowlevel.checkpoint()


def _chunks(events: tuple[StatusEvent, ...]) -> list[tuple[StatusEvent, ...]]:
    """A write's events in slices of EVENT_SLICE (one, empty, if it has none: its inbox entries still count)."""
    if len(events) <= EVENT_SLICE:
        return [events]
    return [events[i : i + EVENT_SLICE] for i in range(0, len(events), EVENT_SLICE)]


async def plan_writes(store: LogStore, group: Sequence[Write], *, fast: bool = True,
                      ) -> tuple[WritePlan, list[InboxChanged | None]]:
    """Read what a group of writes needs (one of split_batch's groups), then plan it; the plan and each write's answer.

    `fast`: the keys a fresh RecordEvents names first in the group are not read but planned as having no
    stored status (Planner.record's `fresh`); the plan names them (WritePlan.fresh), and a backend that
    finds one stored applies nothing of it (NotFresh): `_write_group` then plans the group with `fast` off.
    """
    states: list[InboxState] = []
    unread: list[UnreadThrough] = []
    keys: dict[StatusKey, None] = {}  # in order, once each
    fresh: set[StatusKey] = set()  # named first by a fresh RecordEvents: not read
    read: set[tuple[str, str]] = set()
    work = _Work()
    for w in group:
        if isinstance(w, RecordEvents):
            for events in _chunks(w.events):
                if fast and w.fresh:
                    fresh.update(k for k in event_keys(events) if k not in keys)
                else:
                    keys.update((k, None) for k in event_keys(events) if k not in fresh)
                await work.did(len(events))
            continue
        found = None
        if w.action is InboxAction.READ_ALL:
            found = await store.inbox_unread(w.user_id, w.through)
            unread.append(found)
        for nid in w.ids:
            if (w.user_id, nid) not in read:
                read.add((w.user_id, nid))
                row = await store.inbox_get(w.user_id, nid)
                if row is not None:
                    states.append(InboxState(w.user_id, nid, row.read_ms is not None, row.archived_ms is not None))
        keys.update(inbox_keys(w, found))
    planner = Planner(await store.key_states(list(keys)) if keys else (), states, unread)
    answers: list[InboxChanged | None] = []
    for w in group:
        if isinstance(w, RecordEvents):
            for n, events in enumerate(_chunks(w.events)):  # a write's events in turn: as if recorded at once
                planner.record(events, w.inbox if n == 0 else (), fresh=fast and w.fresh)
                await work.did(len(events))
            answers.append(None)
        else:
            answers.append(planner.change_inbox(w))
    start = 0
    while planner.key_count > PLAN_SLICE and start < planner.key_count:  # a large group: the loop free between slices
        if start:
            await trio.lowlevel.checkpoint()
        start = planner.plan_keys(start, PLAN_SLICE)
    needed = planner.timelines_needed()
    if needed:
        planner.add_timelines(await store.key_states(needed, timeline=True))
    return planner.plan(), answers


async def write_batch(store: LogStore, batch: Sequence[Write]) -> list[InboxChanged | None]:
    """Plan and apply a batch as the Recorder does; each write's answer (None for RecordEvents), once durable."""
    answers: list[InboxChanged | None] = []
    for group in split_batch(batch):
        answers += await _write_group(store, [batch[i] for i in group])
    return answers


async def _write_group(store: LogStore, group: Sequence[Write]) -> list[InboxChanged | None]:
    """Read, plan and apply one group; each write's answer. A plan whose fresh keys were not all fresh (NotFresh:
    nothing of it applied) is made again from what is stored, every key read."""
    plan, answers = await plan_writes(store, group)
    try:
        await store.apply(plan)
    except NotFresh as exc:
        log.info("planned again, reading every key: %s", exc)
        plan, answers = await plan_writes(store, group, fast=False)
        await store.apply(plan)
    return answers


async def record_events(store: LogStore, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry] = ()) -> None:
    """Write status events and inbox entries as the Recorder does."""
    await write_batch(store, [RecordEvents(tuple(events), tuple(inbox))])


async def change_inbox(store: LogStore, change: InboxChange) -> InboxChanged:
    """Apply an inbox change as the Recorder does; what it changed."""
    [answer] = await write_batch(store, [change])
    assert answer is not None
    return answer


class Recorder:
    def __init__(self, store: LogStore, mailbox: Mailbox[RecorderMessage], batch: int, linger_s: float = 0.0,
                 health: PortHealth | None = None) -> None:
        self.store = store
        self.health = health  # told while the log store cannot be reached (GET /readyz, and the Ingress refuses at once)
        self.mailbox = mailbox
        self.batch = batch
        self.linger_s = linger_s
        self._company = False  # the last batch had more than one message: linger for the next one
        self.transactions = 0
        self.events_written = 0
        self.unavailable_retries = 0  # writes tried again because the log store could not be reached

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                first = await self.mailbox.receive()
            except trio.EndOfChannel:
                return
            pending = [first]
            size = _size(first)
            deadline = trio.current_time() + self.linger_s  # the batch waits this long at most for company
            while size < self.batch:
                more = await self._next_before(deadline)
                if more is None:
                    break
                pending.append(more)
                size += _size(more)
            self._company = len(pending) > 1
            await self._write(pending)

    async def _write_group_until_written(self, pending: list[RecorderMessage], group: Sequence[int], writes: Sequence[Write],
                                         ) -> list[InboxChanged | None]:
        """Write a group; while the log store cannot be reached (PortUnavailable: its server down), its askers are
        answered with that error at once (the front end's 503) and the group is written again, with backoff, until it
        is: the plan is idempotent, so nothing recorded is lost or doubled, and the node keeps running. Meanwhile the
        mailbox fills and its senders wait (or fail fast): a consumer commits nothing it has not recorded."""
        told = False

        def on_wait(exc: PortUnavailable) -> None:
            nonlocal told
            if self.health is not None:
                self.health.failed("logstore", str(exc))
            if not told:
                told = True
                for i in group:
                    reply = pending[i].reply
                    if reply is not None:
                        reply.fail(exc)
                        pending[i] = _answered(pending[i])
            self.unavailable_retries += 1

        written = await until_available(lambda: _write_group(self.store, writes), "recorder (the log store)", on_wait)
        if told and self.health is not None:
            self.health.recovered("logstore")
        return written

    async def _next_before(self, deadline: float) -> RecorderMessage | None:
        """The next message if one is queued or arrives before `deadline`; None if none does (or the mailbox closed)."""
        try:
            return self.mailbox.receive_nowait()
        except trio.EndOfChannel:
            return None
        except trio.WouldBlock:
            if self.linger_s <= 0 or not self._company:
                return None
        with trio.move_on_at(deadline):
            try:
                return await self.mailbox.receive()
            except trio.EndOfChannel:
                return None
        return None

    async def _write(self, pending: list[RecorderMessage]) -> None:
        writes: list[Write] = [m if isinstance(m, RecordEvents) else m.change for m in pending]
        groups = split_batch(writes)
        for n, group in enumerate(groups):
            try:
                answers = await self._write_group_until_written(pending, group, [writes[i] for i in group])
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else RuntimeError("recorder stopped")
                for later in groups[n:]:
                    for i in later:
                        reply = pending[i].reply
                        if reply is not None:
                            reply.fail(error)
                raise
            self.transactions += 1
            for i, answer in zip(group, answers):
                message = pending[i]
                if isinstance(message, RecordEvents):
                    self.events_written += len(message.events)
                    if message.reply is not None:
                        message.reply.send(None)
                elif message.reply is not None and answer is not None:
                    message.reply.send(answer)


def _answered(message: RecorderMessage) -> RecorderMessage:
    """The message with no reply left to send (its asker was already answered)."""
    return dataclasses.replace(message, reply=None)
