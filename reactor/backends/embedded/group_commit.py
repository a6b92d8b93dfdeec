"""Group commit: concurrent callers queue items; one task makes each queue-full durable at once.

The embedded bus produces through one (records: one write and one fdatasync per
partition touched, for every producer waiting) and commits offsets through another.
While a batch is being written the next one fills, so the cost of a sync is shared by
everything that arrived during the previous one. Kafka's `linger.ms` is `linger_s`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

from .bus_errors import BusClosed

T = TypeVar("T")
R = TypeVar("R")


class Batch(Generic[T]):
    """The items queued for one write, and the event that wakes their callers once it is durable (or failed)."""

    __slots__ = ("items", "done", "error")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.done = trio.Event()
        self.error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise BusClosed(f"the bus stopped before this write was acknowledged: {self.error!r}") from self.error


class GroupCommit(Generic[T, R]):
    """Concurrent callers queue items; one task writes each queue-full at once.

    `write(items)` makes the items durable (in worker threads; a write in progress is
    never abandoned); `publish(items, result)` applies the result in Trio and may return
    follow-up work for a thread (retention), done before the callers wake. While a batch
    is being written the next one fills.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[R]],
        publish: Callable[[list[T], R], Callable[[], object] | None],
        linger_s: float,
    ) -> None:
        self._write = write
        self._publish = publish
        self._linger_s = linger_s
        self._batch: Batch[T] = Batch()
        self._wake = trio.Event()
        self._stopping = False

    def submit(self, items: Sequence[T]) -> Batch[T]:
        batch = self._batch
        batch.items.extend(items)
        self._wake.set()
        return batch

    def stop(self) -> None:
        """Write what is queued, then let `run` return."""
        self._stopping = True
        self._wake.set()

    def fail_pending(self, error: BaseException) -> None:
        self._batch.fail(error)

    async def run(self) -> None:
        while True:
            while not self._batch.items:
                if self._stopping:
                    return
                wake = self._wake = trio.Event()  # submit() and stop() set it
                await wake.wait()
            if self._linger_s > 0 and not self._stopping:
                await trio.sleep(self._linger_s)
            batch, self._batch = self._batch, Batch()
            try:
                result = await self._write(batch.items)
            except BaseException as exc:
                batch.fail(exc)
                raise
            try:  # durable from here on: the callers are acknowledged whatever happens
                follow_up = self._publish(batch.items, result)
                if follow_up is not None:
                    await trio.to_thread.run_sync(follow_up)
            finally:
                batch.done.set()
