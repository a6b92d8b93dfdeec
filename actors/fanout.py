"""The fan-out actor: expands a topic send into one notification per subscriber, a batch at a time, checkpointed.

A topic send is a fan-out job in the Store, written before its 202 (actors/services/topic_sends.py).
A worker's Fanout claims one job at a time by lease (Store.claim_fanout: one worker expands a
job, another takes it over once the lease ends) and loops:

1. page the topic's next `batch` subscribers after the job's cursor, in user id order, and read
   their profiles in one UserStore read (UserStore.users, those not in the profile cache);
2. plan each one's copy with the Ingress's planning (actors/ingress.py SendPlanner: that user's
   preferences, locale, quiet hours and template; the send's priority), under a notification id
   derived from the send's id and the user id (protocol.topics.member_notification_id);
3. append the batch's records to the bus in one durable produce, hand the held ones to the
   Scheduler and the events to the Recorder (SendPlanner.commit);
4. checkpoint: the last user id, the count expanded and the per-channel counts, durably, with the
   lease renewed (Store.checkpoint_fanout; refused if another worker took the job over: stop).

Steps 1-2 of the next page run while step 3 of this one is in flight (its append and the
Recorder's write wait on fsyncs); the next page is committed only after this one's checkpoint.

A crash between 3 and 4 expands that batch again after the restart: the same users (the cursor
did not move), the same notification ids. The first batch after every claim is therefore marked
`deferred` (maybe produced before): the consumer asks the send ledger before each of its records
goes out, so a subscriber's second copy never reaches the provider. No subscriber is skipped:
the cursor moves only past a batch that is durably on the bus.

Subscriptions that change during a fan-out: the audience is the topic's subscribers as paged.
A user who subscribes with an id above the cursor gets the send, below it does not; one who
unsubscribes before the cursor reaches them does not get it.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from dataclasses import dataclass, replace

import msgspec
import trio

from protocol.api import NotificationRequest
from protocol.channels import Channel
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from protocol.problems import Problem
from protocol.topics import TOPIC_SEND_PREFIX, ChannelCounts, member_notification_id
from reactor.clock import wall_ms
from reactor.ports import FanoutJob, Store
from reactor.until_available import until_available

from .ingress import PLAN_SLICE, PlannedBatch, SendPlanner

log = logging.getLogger("herald.fanout")

_request = msgspec.json.Decoder(NotificationRequest)
_counts = msgspec.json.Decoder(dict[str, ChannelCounts])
_encode = msgspec.json.Encoder().encode


def decode_counts(raw: bytes) -> dict[str, ChannelCounts]:
    return _counts.decode(raw)


def add_counts(counts: dict[str, ChannelCounts], events: list[StatusEvent]) -> dict[str, ChannelCounts]:
    """The counts with each copy's planned step added: queued (on the bus), held (quiet hours) or failed (preferences)."""
    step: Counter[tuple[str, str]] = Counter()
    for event in events:
        if event.status is Status.FAILED:
            step[event.channel.value, "failed"] += 1
        elif event.status is Status.QUEUED:
            step[event.channel.value, "held" if event.detail else "queued"] += 1
    out = dict(counts)
    for (channel, kind), n in step.items():
        now = out.get(channel, ChannelCounts())
        out[channel] = replace_count(now, kind, n)
    return out


def replace_count(counts: ChannelCounts, kind: str, n: int) -> ChannelCounts:
    return msgspec.structs.replace(counts, **{kind: getattr(counts, kind) + n})


@dataclass
class FanoutFigures:
    """What /metrics reads (collect-time): subscribers expanded, jobs finished and the job under way on this worker."""

    expanded: int = 0
    batches: int = 0
    jobs_done: int = 0
    takeovers_lost: int = 0  # checkpoints refused: another worker took the job over
    current_job: str = ""
    current_expanded: int = 0
    current_total: int = 0


class Fanout:
    def __init__(
        self, store: Store, planner: SendPlanner, *, batch: int = 500, lease_s: float = 30.0, poll_s: float | None = 1.0,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.planner = planner
        self.batch = batch
        self.lease_ms = int(lease_s * 1000)
        self.poll_s = poll_s  # None: only woken (a node whose Store no other node writes to)
        self.owner = owner or f"fanout-{secrets.token_hex(6)}"
        self.figures = FanoutFigures()
        self._wake = trio.Event()
        self._stopping = False

    def wake(self) -> None:
        """A topic send was accepted in this process: look for work now."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self._stopping:
            self._wake = trio.Event()  # before the claim: a wake during it is not lost
            job = await until_available(lambda: self.store.claim_fanout(self.owner, wall_ms(), self.lease_ms), "the fan-out")
            if job is None:
                with trio.move_on_after(self.poll_s if self.poll_s is not None else float("inf")):
                    await self._wake.wait()
                continue
            await self._expand(job)

    async def _expand(self, job: FanoutJob) -> None:
        request = _request.decode(job.request)
        counts = decode_counts(job.counts)
        figures = self.figures
        figures.current_job, figures.current_expanded, figures.current_total = job.id, job.expanded, job.total
        maybe_expanded_before = True  # the batch after the checkpoint may be on the bus already (a crash before its checkpoint)
        log.info("fan-out %s of topic %s: from %s (%d of %d expanded)", job.id, job.topic, job.cursor or "the start", job.expanded, job.total)
        users = await self.store.subscribers(job.topic, job.cursor, self.batch)
        planned = await self._plan_page(job, request, users, maybe_expanded_before)
        while not self._stopping:
            done = len(users) < self.batch
            ahead: list[tuple[list[str], PlannedBatch]] = []
            async with trio.open_nursery() as nursery:
                if not done:  # the next page read and planned while this one's append is in flight (it is committed only after)
                    nursery.start_soon(self._plan_ahead, job, request, users[-1], ahead)
                await self.planner.commit(planned)
            counts = add_counts(counts, planned.events)
            job = replace(
                job, cursor=users[-1] if users else job.cursor, expanded=job.expanded + len(users), counts=_encode(counts),
                done_ms=wall_ms() if done else None,
            )
            if not await self.store.checkpoint_fanout(self.owner, job, wall_ms(), self.lease_ms):
                figures.takeovers_lost += 1
                log.warning("fan-out %s: taken over by another worker at %d expanded; stopping here", job.id, job.expanded)
                break
            figures.expanded += len(users)
            figures.batches += 1
            figures.current_expanded = job.expanded
            if done:
                figures.jobs_done += 1
                log.info("fan-out %s of topic %s done: %d subscribers", job.id, job.topic, job.expanded)
                break
            (users, planned), = ahead
        figures.current_job, figures.current_expanded, figures.current_total = "", 0, 0

    async def _plan_ahead(
        self, job: FanoutJob, request: NotificationRequest, after: str, out: list[tuple[list[str], PlannedBatch]]
    ) -> None:
        users = await self.store.subscribers(job.topic, after, self.batch)
        out.append((users, await self._plan_page(job, request, users, False)))

    async def _plan_page(self, job: FanoutJob, request: NotificationRequest, users: list[str], again: bool) -> PlannedBatch:
        """One page of subscribers planned: their profiles read at once (SendPlanner.read_profiles), then each copy."""
        planned = PlannedBatch()
        await self.planner.read_profiles(users, planned)
        for n, user in enumerate(users):
            if n and not n % PLAN_SLICE:  # a page planned in slices: the loop is not held for all of it (issue 10 item 6)
                await trio.lowlevel.checkpoint()
            await self._plan_one(job, request, user, planned, again)
        return planned

    async def _plan_one(self, job: FanoutJob, request: NotificationRequest, user: str, planned: PlannedBatch, again: bool) -> None:
        nid = member_notification_id(job.id, user)
        copy = msgspec.structs.replace(request, user_id=user, topic=None)
        result = await self.planner.plan(copy, planned, nid=nid, origin=job.id, deferred=again)
        if isinstance(result, Problem):  # e.g. no address for a channel in this user's preferences: that copy failed
            now = wall_ms()
            for channel in request.channels:
                planned.events += [
                    StatusEvent(nid, user, Channel(channel), Status.ACCEPTED, now, detail=f"{TOPIC_SEND_PREFIX}{job.id}", created_ms=now,
                                priority=request.priority),
                    StatusEvent(nid, user, Channel(channel), Status.FAILED, now, detail=result.detail, created_ms=now,
                                priority=request.priority),
                ]
