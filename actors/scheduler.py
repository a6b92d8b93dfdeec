"""Scheduler: holds bus records until they are due, then produces them back onto the bus.

Retries with backoff go through it (later also quiet hours and scheduled_at). It is
durable: an entry is in the Store before the asker's reply, so the PartitionConsumer can
commit the failed record's offset and move on; at start-up every pending entry is
loaded again. An entry is removed from the Store only after its record is durably on
the bus, so a crash in between produces it twice, never zero times (the send ledger
then suppresses a second send).
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from typing import Any

import trio

from reactor.ask import Reply
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Bus, Scheduled, Store

log = logging.getLogger("herald.scheduler")


@dataclass(frozen=True, slots=True)
class ScheduleAt:
    entry: Scheduled
    reply: Reply[None]


class Scheduler:
    def __init__(self, bus: Bus, store: Store, mailbox: Mailbox[ScheduleAt], batch: int = 500) -> None:
        self.bus = bus
        self.store = store
        self.mailbox = mailbox
        self.batch = batch
        self._heap: list[tuple[int, str, Scheduled]] = []
        self._wake = trio.Event()
        self.fired = 0

    def pending(self) -> int:
        return len(self._heap)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._heap = [(e.due_ms, e.id, e) for e in await self.store.scheduled()]
        heapq.heapify(self._heap)
        if self._heap:
            log.info("scheduler: %d pending entries reloaded", len(self._heap))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fire_loop)
            task_status.started()
            async for message in self.mailbox:
                try:
                    await self.store.schedule(message.entry)
                except BaseException as exc:
                    message.reply.fail(exc if isinstance(exc, Exception) else RuntimeError("scheduler stopped"))
                    raise
                heapq.heappush(self._heap, (message.entry.due_ms, message.entry.id, message.entry))
                self._wake.set()
                message.reply.send(None)
            nursery.cancel_scope.cancel()  # mailbox closed: stopping; what is pending stays in the store

    async def _fire_loop(self) -> None:
        while True:
            self._wake = trio.Event()
            if not self._heap:
                await self._wake.wait()
                continue
            delay = (self._heap[0][0] - wall_ms()) / 1000
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._wake.wait()
                continue
            due: list[Scheduled] = []
            now = wall_ms()
            while self._heap and self._heap[0][0] <= now and len(due) < self.batch:
                due.append(heapq.heappop(self._heap)[2])
            try:
                await self.bus.produce([(e.topic, e.key, e.value) for e in due])
            except BaseException:
                for entry in due:  # not produced: keep them (they are still in the store too)
                    heapq.heappush(self._heap, (entry.due_ms, entry.id, entry))
                raise
            await self.store.unschedule([e.id for e in due])
            self.fired += len(due)
