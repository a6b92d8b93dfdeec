"""Recorder: group-commits status events and inbox entries to the LogStore.

It takes one RecordEvents, then whatever else is already queued (up to `batch` events), writes
them all in one transaction, and answers every RecordEvents that asked for a reply: a
PartitionConsumer commits its bus offsets only after that answer.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from reactor.mailbox import Mailbox
from reactor.ports import LogStore

from .messages import RecordEvents

log = logging.getLogger("herald.recorder")


class Recorder:
    def __init__(self, store: LogStore, mailbox: Mailbox[RecordEvents], batch: int) -> None:
        self.store = store
        self.mailbox = mailbox
        self.batch = batch
        self.transactions = 0
        self.events_written = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                first = await self.mailbox.receive()
            except trio.EndOfChannel:
                return
            pending = [first]
            size = len(first.events) + len(first.inbox)
            while size < self.batch:
                try:
                    more = self.mailbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                pending.append(more)
                size += len(more.events) + len(more.inbox)
            await self._write(pending)

    async def _write(self, pending: list[RecordEvents]) -> None:
        events = [e for r in pending for e in r.events]
        inbox = [i for r in pending for i in r.inbox]
        try:
            await self.store.record(events, inbox)
        except BaseException as exc:
            for record in pending:
                if record.reply is not None:
                    record.reply.fail(exc if isinstance(exc, Exception) else RuntimeError("recorder stopped"))
            raise
        self.transactions += 1
        self.events_written += len(events)
        for record in pending:
            if record.reply is not None:
                record.reply.send(None)
