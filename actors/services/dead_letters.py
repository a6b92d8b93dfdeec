"""Operating the dead-letter queue: list, replay through the normal path, discard.

Replay and discard go a page at a time (PAGE entries: one read, one produce, one delete),
yielding to the loop between pages, and count what they did in a `Progress` as they go:
the Jobs actor (actors/jobs.py) runs them off the request path and the API reads that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
import trio

from protocol.channels import Channel
from protocol.lifecycle import Status
from protocol.messages import StatusEvent, decode_delivery, encode_delivery
from reactor.ask import ask
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Bus, DeadLetter, DlqFilter, Store

from ..messages import RecordEvents, RecorderMessage

PAGE = 200
log = logging.getLogger("herald.dlq")


@dataclass
class Progress:
    """What a replay or discard has done so far (protocol.api.JobView's counts)."""

    total: int = 0  # entries taken up
    replayed: int = 0
    discarded: int = 0
    skipped: int = 0  # replayed by this same run already, and back in the queue (a poison message): left for the next
    errors: int = 0  # left in the queue: the record cannot be decoded
    error: str | None = None  # the last entry's error


class DeadLetters:
    def __init__(self, store: Store, bus: Bus, recorder: Mailbox[RecorderMessage]) -> None:
        self.store = store
        self.bus = bus
        self.recorder = recorder
        self.replayed = 0
        self.discarded = 0

    async def list(self, selection: DlqFilter, after_id: int, limit: int) -> tuple[list[DeadLetter], int | None]:
        """A page of entries and the id to continue after (None at the end)."""
        entries = await self.store.dead_letters(selection, after_id, limit + 1)
        if len(entries) > limit:
            return entries[:limit], entries[limit - 1].id
        return entries, None

    async def count(self, channel: str | None = None) -> int:
        """Entries in the channel's queue (every channel's when None)."""
        return await self.store.dead_letter_count(channel)

    async def replay(self, selection: DlqFilter, progress: Progress | None = None) -> int:
        """Put matching entries back on their channel's topic as first attempts; returns how many.

        Each entry leaves the queue only after its record is durably on the bus: a crash in
        between replays it twice, and the send ledger keeps the second from being sent.
        A message dead-lettered again while the replay runs (a poison message) comes back
        under a new id; it is not replayed a second time by the same call. An entry whose
        record cannot be decoded stays in the queue (logged).
        """
        progress = progress if progress is not None else Progress()
        total, after = 0, 0
        replayed: set[tuple[str, str]] = set()
        while True:
            entries = await self.store.dead_letters(selection, after, PAGE)
            if not entries:
                return total
            after = entries[-1].id
            items, events, taken = [], [], []
            now = wall_ms()
            progress.total += len(entries)
            for entry in entries:
                if (entry.notification_id, entry.channel) in replayed:
                    progress.skipped += 1
                    continue
                try:
                    delivery = decode_delivery(entry.record)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    log.error("dead letter %d (%s %s) cannot be decoded, left in the queue: %s", entry.id, entry.channel,
                              entry.notification_id, exc)
                    progress.errors += 1
                    progress.error = f"entry {entry.id} ({entry.channel}, {entry.notification_id}): record cannot be read: {exc}"[:500]
                    continue
                replayed.add((entry.notification_id, entry.channel))
                taken.append(entry)
                again = msgspec.structs.replace(delivery, attempt=1, replays=delivery.replays + 1)
                items.append((Channel(entry.channel).topic(delivery.priority.lane), delivery.user_id.encode(), encode_delivery(again)))
                events.append(StatusEvent(
                    delivery.notification_id, delivery.user_id, delivery.channel, Status.QUEUED, now,
                    detail=f"replayed from the dead-letter queue ({again.replays})", created_ms=delivery.created_ms,
                    priority=delivery.priority, replay=True,
                ))
            if taken:
                # Recorded first: the replayed record's own events must find the status queued again.
                await ask(self.recorder.send, lambda reply: RecordEvents(tuple(events), (), reply))
                await self.bus.produce(items)
                await self.store.discard_dead_letters([e.id for e in taken])
                total += len(taken)
                self.replayed += len(taken)
                progress.replayed += len(taken)
            await trio.lowlevel.checkpoint()  # a page at a time: whatever else the node does runs in between

    async def discard(self, selection: DlqFilter, progress: Progress | None = None) -> int:
        progress = progress if progress is not None else Progress()
        total, after = 0, 0
        while True:
            entries = await self.store.dead_letters(selection, after, PAGE)
            if not entries:
                self.discarded += total
                return total
            progress.total += len(entries)
            gone = await self.store.discard_dead_letters([e.id for e in entries])
            total += gone
            progress.discarded += gone
            progress.skipped += len(entries) - gone  # taken by someone else meanwhile (a replay, a delivery)
            after = entries[-1].id
            await trio.lowlevel.checkpoint()
