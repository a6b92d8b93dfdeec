"""Group commit: concurrent callers queue items; one write makes each queue-full durable at once.

The embedded bus produces through one (records: one write and one fdatasync per
partition touched, for every producer waiting) and commits offsets through another; the
SQLite stores (the send ledger, the log store) and the sandbox sinks write through one
each. While a batch is being written the next one fills, so the cost of a sync is shared
by everything that arrived during the previous one. Kafka's `linger.ms` is `linger_s`:
how long a batch waits for company before it is written (0: at once; time from Trio's
clock, so MockClock drives it in tests).

Two ways to drive it, the same batches either way:
- `run()`, a task of its own (the bus: its supervisor runs it), with callers doing
  `await submit(items).wait()`;
- `await commit(items)`, the callers themselves (stores and sinks, which have no task):
  when no write is in progress, the first caller whose batch is waiting writes it
  (leader), the others wait for that write to end, and one of them writes the next.

Driven by its callers, a batch lingers only when the one before it had company (more than one
item): a lone caller (a serial Provider) is written at once, as without group commit, and
callers that come together wait `linger_s` at most for each other.

Either way a caller wakes only once its batch is durable, or with an error if that
batch's write failed: a failed batch fails every caller in it, none acknowledged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

T = TypeVar("T")
R = TypeVar("R")


class WriteFailed(Exception):
    """A group-committed write failed: nothing of its batch was acknowledged (the cause is chained)."""


def _write_failed(error: BaseException) -> BaseException:
    return WriteFailed(f"the batch this write was in failed, none of it acknowledged: {error!r}")


class Batch(Generic[T]):
    """The items queued for one write, and the event that wakes their callers once it is durable (or failed)."""

    __slots__ = ("items", "done", "error", "_failed")

    def __init__(self, failed: Callable[[BaseException], BaseException] = _write_failed) -> None:
        self.items: list[T] = []
        self.done = trio.Event()
        self.error: BaseException | None = None
        self._failed = failed

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    async def wait(self) -> None:
        """Return once the batch is durable; raise (a new error per caller, the cause chained) if its write failed."""
        await self.done.wait()
        if self.error is not None:
            raise self._failed(self.error) from self.error


class GroupCommit(Generic[T, R]):
    """Concurrent callers queue items; one write makes each queue-full durable at once.

    `write(items)` makes the items durable (in worker threads; a write in progress is
    never abandoned); `publish(items, result)` applies the result in Trio and may return
    follow-up work for a thread (retention), done before the callers wake. `failed`
    makes the error each caller of a failed batch raises from the write's error.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[R]],
        publish: Callable[[list[T], R], Callable[[], object] | None] | None = None,
        linger_s: float = 0.0,
        failed: Callable[[BaseException], BaseException] = _write_failed,
    ) -> None:
        self._write = write
        self._publish = publish
        self._linger_s = linger_s
        self._failed = failed
        self._batch: Batch[T] = Batch(failed)
        self._wake = trio.Event()
        self._stopping = False
        self._writing = False  # commit(): a caller is writing a batch
        self._written = trio.Event()  # commit(): set when that write ends
        self.batches = 0  # batches written (durable writes made), for tests and benchmarks
        self._last_size = 0  # items in the batch written last

    @property
    def linger_s(self) -> float:
        return self._linger_s

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
        """Write batches as they fill, until stopped (the task-driven way)."""
        while True:
            while not self._batch.items:
                if self._stopping:
                    return
                wake = self._wake = trio.Event()  # submit() and stop() set it
                await wake.wait()
            await self._write_next()

    async def commit(self, items: Sequence[T]) -> Batch[T]:
        """Queue items and return once they are durable (the caller-driven way: no task needed); the batch
        they were written in. Raises (see `failed`) if that batch's write failed."""
        batch = self.submit(items)
        while not batch.done.is_set():
            if self._writing:  # another caller is writing an earlier batch: wait for it, then look again
                await self._written.wait()
                continue
            # no write in progress, so this caller's batch is the one waiting: write it
            self._writing, self._written = True, trio.Event()
            try:
                await self._write_next(shield=True, linger=self._last_size > 1)
            except Exception:  # noqa: S110 - the batch carries the error to each of its callers, this one too
                pass
            finally:
                self._writing = False
                self._written.set()
        if batch.error is None:  # durable: this caller already waited (its write or another's), no further turn needed
            await trio.lowlevel.checkpoint_if_cancelled()  # but a caller cancelled meanwhile is not acknowledged
            return batch
        await batch.wait()  # raises the batch's error
        return batch

    async def _write_next(self, shield: bool = False, linger: bool = True) -> None:
        """Linger, then write the waiting batch and wake its callers (failing them if the write raises).

        `shield`: a caller that writes for others is not let off by its own cancellation once the
        write has started (it waits that one write out), so it never fails the others' batch.
        """
        if linger and self._linger_s > 0 and not self._stopping:
            await trio.sleep(self._linger_s)
        batch, self._batch = self._batch, Batch(self._failed)
        self._last_size = len(batch.items)
        try:
            with trio.CancelScope(shield=shield):
                result = await self._write(batch.items)
        except BaseException as exc:
            batch.fail(exc)
            raise
        self.batches += 1
        try:  # durable from here on: the callers are acknowledged whatever happens
            if self._publish is not None:
                follow_up = self._publish(batch.items, result)
                if follow_up is not None:
                    await trio.to_thread.run_sync(follow_up)
        finally:
            batch.done.set()
