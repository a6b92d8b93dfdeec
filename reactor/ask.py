"""Ask/reply: a request carries a one-shot Reply; the asker waits in its own cancel scope.

The replier never blocks on the reply (the asker may be gone: cancelled or timed out),
and an actor that crashes while holding a Reply fails it, so no asker waits forever.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Generic, TypeVar

import trio

T = TypeVar("T")


class ActorCrashed(Exception):
    """The actor handling the request failed before answering."""


class Reply(Generic[T]):
    """A one-shot slot: the first send/fail wins, later ones are ignored; nobody blocks."""

    __slots__ = ("_event", "_ok", "_value", "done")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._ok = False
        self._value: Any = None
        self.done = False

    def send(self, value: T) -> None:
        self._put(True, value)

    def fail(self, error: BaseException) -> None:
        self._put(False, error)

    def _put(self, ok: bool, value: Any) -> None:
        if self.done:
            return  # answered already; an asker that went away simply never reads it
        self.done = True
        self._ok, self._value = ok, value
        self._event.set()

    async def wait(self) -> T:
        await self._event.wait()
        if self._ok:
            return self._value  # type: ignore[no-any-return]
        raise self._value


async def ask(send: Callable[[Any], Awaitable[None]], make: Callable[[Reply[T]], Any]) -> T:
    """Send `make(reply)` with `send` and wait for the answer.

    Cancel the caller's scope to stop waiting; a late answer is dropped.
    """
    reply: Reply[T] = Reply()
    await send(make(reply))
    return await reply.wait()
