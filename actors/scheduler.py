"""Scheduler: holds bus records until they are due, then produces them back onto the bus.

Retries with backoff, quiet hours and scheduled_at go through it. It is durable: an entry
is in the Store before the asker's reply, so the PartitionConsumer can commit the failed
record's offset and move on.

It keeps no entry in memory but the ones it is firing: it *claims* due entries from the
Store by lease (`Store.claim_due`: at most `batch` at a time, leased for `lease_s`),
produces their records, and removes them from the Store only once the records are
durably on the bus. Any number of Schedulers (nodes) share one Store: a claimed entry is
handed to one of them while its lease runs; if that one dies before removing it, another
claims it when the lease ends and produces it again (twice at worst, never zero times:
the send ledger then suppresses the second send). Between claims it sleeps until the
Store's next due time (`Store.next_due_ms`, which counts the end of other claimers'
leases), woken early when an entry it is given is due sooner, and, when other Schedulers
share its Store, at least every `poll_s`: an entry another node stored and did not fire
(that node died) is seen within it. A Scheduler alone on its Store (the embedded one: one
node per data dir) is given every entry through its mailbox and needs no poll.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass

import trio

from reactor.ask import Reply
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Bus, PortUnavailable, Scheduled, Store
from reactor.until_available import until_available

log = logging.getLogger("herald.scheduler")

LEASE_S = 30.0  # how long a claim holds: far more than producing one batch takes
POLL_S = 5.0  # the longest sleep when other Schedulers share the Store: what they stored and left is seen within it


@dataclass(frozen=True, slots=True)
class ScheduleAt:
    entry: Scheduled
    reply: Reply[None]


class Scheduler:
    """Stores the entries it is given; fires the due ones it claims (see the module's docstring).

    `owner` names this claimer in the Store's leases: unique per Scheduler (a random one by
    default), kept across restarts in place (the supervisor runs `run` again), so a
    Scheduler restarted after a crash takes back at once what it had claimed.
    """

    def __init__(
        self, bus: Bus, store: Store, mailbox: Mailbox[ScheduleAt], batch: int = 500, *,
        owner: str | None = None, lease_s: float = LEASE_S, poll_s: float | None = POLL_S,
    ) -> None:
        if batch < 1 or lease_s <= 0 or (poll_s is not None and poll_s <= 0):
            raise ValueError("the Scheduler needs batch >= 1, lease_s > 0 and poll_s > 0 (or None: no other Scheduler)")
        self.bus = bus
        self.store = store
        self.mailbox = mailbox
        self.batch = batch
        self.owner = owner or f"scheduler-{secrets.token_hex(6)}"
        self.lease_ms = int(lease_s * 1000)
        self.poll_s = poll_s
        self._claimed: list[Scheduled] = []  # the only entries in memory: the batch being fired
        self._next_due: int | None = None  # the Store's next due time as last read (None: nothing pending)
        self._wake = trio.Event()
        self._stopping = False
        self.fired = 0
        self.most_held = 0  # the most entries this Scheduler ever held at once (at most `batch`)

    def held(self) -> int:
        """Entries in memory now: the claimed batch being fired (the pending ones stay in the Store)."""
        return len(self._claimed)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._stopping = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fire_loop)
            task_status.started()
            try:
                async for message in self.mailbox:
                    try:
                        await self.store.schedule(message.entry)
                    except PortUnavailable as exc:  # the Store away: this asker's 503; the Scheduler goes on
                        message.reply.fail(exc)
                        continue
                    except BaseException as exc:
                        message.reply.fail(exc if isinstance(exc, Exception) else RuntimeError("scheduler stopped"))
                        raise
                    if self._next_due is None or message.entry.due_ms < self._next_due:
                        self._next_due = message.entry.due_ms
                        self._wake.set()  # due sooner than the fire loop's sleep: wake it
                    message.reply.send(None)
            finally:
                # mailbox closed (stopping): the batch being fired is finished, nothing more is claimed;
                # what is pending stays in the store
                self._stopping = True
                self._wake.set()

    async def _fire_loop(self) -> None:
        while not self._stopping:
            self._wake = trio.Event()  # before reading the store: a schedule from now on wakes the sleep below
            if await self._fire_due():
                continue
            self._next_due = await until_available(self.store.next_due_ms, "the scheduler")
            if self._stopping:
                return
            wait_s = math.inf if self.poll_s is None else self.poll_s
            if self._next_due is not None:
                wait_s = min(wait_s, max(self._next_due - wall_ms(), 1) / 1000)
            with trio.move_on_after(wait_s):
                await self._wake.wait()

    async def _fire_due(self) -> bool:
        """Claim the entries due now, produce them, remove them; False if none was due."""
        claimed = await until_available(lambda: self.store.claim_due(self.owner, wall_ms(), self.batch, self.lease_ms), "the scheduler")
        if not claimed:
            return False
        self._claimed = claimed
        self.most_held = max(self.most_held, len(claimed))
        try:
            await self.bus.produce([(e.topic, e.key, e.value) for e in claimed])
            ids = [e.id for e in claimed]
            await until_available(lambda: self.store.unschedule(ids), "the scheduler")  # only once the records are durable on the bus
        finally:
            self._claimed = []  # not produced, or not removed: still in the store, leased to this owner
        self.fired += len(claimed)
        return True
