"""A bounded mailbox with an overflow policy per edge.

BLOCK: the sender waits for room (the bus -> consumer -> provider chain: backpressure
flows upstream). FAIL_FAST: the sender gets MailboxFull at once (HTTP -> Ingress answers
503; fan-out to sessions disconnects the slow one).

The mailbox outlives the actor that reads it, so a restarted actor picks up where the
crashed one stopped. `close()` ends it: senders get MailboxClosed, the reader drains
what is queued and then its `async for` ends.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Overflow(enum.Enum):
    BLOCK = "block"
    FAIL_FAST = "fail_fast"


class MailboxFull(Exception):
    pass


class MailboxClosed(Exception):
    pass


@dataclass(frozen=True)
class MailboxStatistics:
    name: str
    capacity: int
    queued: int
    senders_waiting: int
    sent: int
    rejected: int


class Mailbox(Generic[T]):
    def __init__(self, name: str, capacity: int, overflow: Overflow = Overflow.BLOCK) -> None:
        if capacity < 1:
            raise ValueError("a mailbox needs capacity >= 1 (bounded, never infinite)")
        self.name = name
        self.capacity = capacity
        self.overflow = overflow
        self._send, self._receive = trio.open_memory_channel[T](capacity)
        self._sent = 0
        self._rejected = 0

    async def send(self, message: T) -> None:
        """Deliver per the mailbox's policy: wait for room, or raise MailboxFull."""
        if self.overflow is Overflow.FAIL_FAST:
            self.send_nowait(message)
            return
        try:
            await self._send.send(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise MailboxClosed(self.name) from None
        self._sent += 1

    def offer(self, message: T) -> bool:
        """Deliver at once if there is room (True), without a turn of the scheduler; False if full (nothing counted as
        rejected: the caller then `send`s, and waits). Raises MailboxClosed once closed."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise MailboxClosed(self.name) from None
        self._sent += 1
        return True

    def send_nowait(self, message: T) -> None:
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self._rejected += 1
            raise MailboxFull(self.name) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise MailboxClosed(self.name) from None
        self._sent += 1

    async def receive(self) -> T:
        """The next message; raises trio.EndOfChannel once closed and drained."""
        return await self._receive.receive()

    def receive_nowait(self) -> T:
        return self._receive.receive_nowait()

    def __aiter__(self) -> Mailbox[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._send.close()

    @property
    def closed(self) -> bool:
        return self._send._closed  # noqa: SLF001 - trio exposes no public flag

    def statistics(self) -> MailboxStatistics:
        stats = self._send.statistics()
        return MailboxStatistics(
            name=self.name,
            capacity=self.capacity,
            queued=stats.current_buffer_used,
            senders_waiting=stats.tasks_waiting_send,
            sent=self._sent,
            rejected=self._rejected,
        )
