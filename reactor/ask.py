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
    __slots__ = ("_send", "_receive", "done")

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[bool, Any]](1)
        self.done = False

    def send(self, value: T) -> None:
        self._put(True, value)

    def fail(self, error: BaseException) -> None:
        self._put(False, error)

    def _put(self, ok: bool, value: Any) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._send.send_nowait((ok, value))
        except (trio.BrokenResourceError, trio.WouldBlock):
            pass  # the asker went away

    async def wait(self) -> T:
        try:
            ok, value = await self._receive.receive()
        finally:
            self._receive.close()
        if ok:
            return value  # type: ignore[no-any-return]
        raise value


async def ask(send: Callable[[Any], Awaitable[None]], make: Callable[[Reply[T]], Any]) -> T:
    """Send `make(reply)` with `send` and wait for the answer.

    Cancel the caller's scope to stop waiting; a late answer is dropped.
    """
    reply: Reply[T] = Reply()
    await send(make(reply))
    return await reply.wait()
