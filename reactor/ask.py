"""Ask/reply: a request carries a one-shot Reply; the asker waits in its own cancel scope.

The replier never blocks on the reply (the asker may be gone: cancelled or timed out),
and an actor that crashes while holding a Reply fails it, so no asker waits forever.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Generic, TypeVar

import trio

T = TypeVar("T")
M = TypeVar("M")


class ActorCrashed(Exception):
    """The actor handling the request failed before answering."""


_UNANSWERED = ActorCrashed("no answer yet")  # what a Reply holds until it is answered (never raised: wait() reads it after)


class Reply(Generic[T]):
    """A one-shot slot: the first send/fail wins, later ones are ignored; nobody blocks.

    Its Event is made only when someone waits before the answer came (most answers are read
    where they are given, or after: a Reply per delivery made one for nothing)."""

    __slots__ = ("_event", "_outcome", "done")

    def __init__(self) -> None:
        self._event: trio.Event | None = None
        self._outcome: tuple[T] | BaseException = _UNANSWERED  # (the answer,) or the error, once answered
        self.done = False

    def send(self, value: T) -> None:
        self._settle((value,))

    def fail(self, error: BaseException) -> None:
        self._settle(error)

    def _settle(self, outcome: tuple[T] | BaseException) -> None:
        if self.done:
            return  # answered already; an asker that went away simply never reads it
        self.done = True
        self._outcome = outcome
        if self._event is not None:
            self._event.set()

    async def wait(self) -> T:
        if self.done:
            await trio.lowlevel.checkpoint()  # as an Event already set would: a checkpoint, no wait
        else:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        outcome = self._outcome
        if isinstance(outcome, tuple):
            return outcome[0]
        raise outcome


async def ask(send: Callable[[M], Awaitable[None]], make: Callable[[Reply[T]], M]) -> T:
    """Send `make(reply)` with `send` and wait for the answer.

    Cancel the caller's scope to stop waiting; a late answer is dropped.
    """
    reply: Reply[T] = Reply()
    await send(make(reply))
    return await reply.wait()
