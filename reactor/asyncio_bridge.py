"""The one module where asyncio runs: Trio code calls asyncio coroutines (aiokafka's) through it.

`open_bridge()` opens one trio-asyncio loop for the lifetime of its block (a backend opens it
once) and starts two long-lived pumps, one per direction, so that Trio code never pays a
crossing (~100 us each, FACTS.md) per call:

    requests   Trio callers put jobs in a bounded Trio memory channel; one asyncio task takes
               them out in batches (one crossing per batch: everything queued meanwhile comes
               along) and starts each job as an asyncio task.
    results    finished jobs gather in a list on the asyncio side; one asyncio task hands the
               whole list back to Trio in one crossing, where each caller is woken.

`bridge.call(make)` runs `make()` (a function returning an asyncio-flavoured awaitable: it is
called on the asyncio side, so it may create asyncio objects) and returns its result or raises
its exception in the Trio caller. A caller cancelled while waiting cancels the asyncio task (its
side effects may have happened: a produce may still be written). Code run on the asyncio side
that must wait for Trio (a rebalance listener handing a change over) uses `bridge.to_trio(fn,
*args)`: one crossing, for rare events. The backends' asyncio-side coroutines (those that await
aiokafka) are plain `async def`s passed in here; nothing else imports asyncio or trio_asyncio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import outcome
import trio
import trio_asyncio  # type: ignore[import-untyped]

T = TypeVar("T")
log = logging.getLogger("herald.asyncio_bridge")


class BridgeClosed(Exception):
    """The bridge (its asyncio loop) closed before the call finished."""


@dataclass(eq=False)
class _Job(Generic[T]):
    make: Callable[[], Awaitable[T]]
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[T] | None = None
    abandoned: bool = False  # the Trio caller stopped waiting
    task: asyncio.Future[Any] | None = None


@dataclass
class BridgeStatistics:
    calls: int = 0
    request_batches: int = 0  # crossings Trio -> asyncio
    result_batches: int = 0  # crossings asyncio -> Trio


class AsyncioBridge:
    """Calls into one trio-asyncio loop through two batching pumps (open it with `open_bridge`)."""

    def __init__(self, max_queued: int, max_batch: int) -> None:
        self._send, self._receive = trio.open_memory_channel[_Job[Any]](max_queued)
        self._max_batch = max_batch
        self._pending: set[_Job[Any]] = set()  # called, not finished: failed with BridgeClosed at close
        self._finished: list[_Job[Any]] = []  # asyncio side: finished, not yet handed to Trio
        self._finished_ready: asyncio.Event | None = None
        self._closed = False
        self.statistics = BridgeStatistics()

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run `make()` on the asyncio loop; its result (or its exception) here."""
        if self._closed:
            raise BridgeClosed("the asyncio bridge is closed")
        job: _Job[T] = _Job(make)
        self._pending.add(job)
        self.statistics.calls += 1
        try:
            try:
                await self._send.send(job)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise BridgeClosed("the asyncio bridge is closed") from None
            await job.done.wait()
        except BaseException:
            if job.result is None:
                job.abandoned = True
                if job.task is not None:
                    job.task.cancel()
            raise
        finally:
            self._pending.discard(job)
        assert job.result is not None
        return job.result.unwrap()

    def to_trio(self, fn: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
        """For code running on the asyncio side: run the Trio async function `fn(*args)`, awaitable there (one crossing)."""
        return cast(Awaitable[T], trio_asyncio.trio_as_aio(fn)(*args))

    # -- the pumps -----------------------------------------------------------------------

    async def _take_requests(self) -> list[_Job[Any]]:
        """Trio side: the next job (waits for one) and every job queued behind it, up to a batch."""
        try:
            batch = [await self._receive.receive()]
        except trio.EndOfChannel:
            return []
        while len(batch) < self._max_batch:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch

    async def _request_pump(self) -> None:
        """Asyncio side: takes batches of jobs from Trio (one crossing each) and starts them as tasks."""
        take = trio_asyncio.trio_as_aio(self._take_requests)
        while True:
            batch: list[_Job[Any]] = await take()
            if not batch:
                return
            self.statistics.request_batches += 1
            for job in batch:
                if not job.abandoned:
                    job.task = asyncio.ensure_future(self._run(job))

    async def _run(self, job: _Job[Any]) -> None:
        try:
            job.result = outcome.Value(await job.make())
        except asyncio.CancelledError as exc:
            job.result = outcome.Error(BridgeClosed(f"cancelled on the asyncio side: {exc!r}"))
        except Exception as exc:
            job.result = outcome.Error(exc)
        self._finished.append(job)
        assert self._finished_ready is not None
        self._finished_ready.set()

    async def _hand_over(self, batch: list[_Job[Any]]) -> None:
        """Trio side: wake the callers of finished jobs."""
        for job in batch:
            job.done.set()

    async def _result_pump(self) -> None:
        """Asyncio side: hands every finished job to Trio at once (one crossing per batch)."""
        ready = self._finished_ready = asyncio.Event()
        hand_over = trio_asyncio.trio_as_aio(self._hand_over)
        while True:
            await ready.wait()
            ready.clear()
            batch, self._finished = self._finished, []
            if batch:
                self.statistics.result_batches += 1
                await hand_over(batch)

    def _close(self) -> None:
        self._closed = True
        self._send.close()  # callers waiting for room in the queue get BrokenResourceError
        for job in list(self._pending):
            if job.result is None:
                job.result = outcome.Error(BridgeClosed("the asyncio bridge closed before this call finished"))
            job.done.set()


def _log_asyncio_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: log, never raise into the bridge's nursery (trio-asyncio's default would).

    What reaches it is asyncio-side housekeeping: a client's background task failing (the call
    waiting on it fails on its own), or "Unclosed AIOKafkaConsumer" from clients left open by a
    crash (a cancelled handle: its loop stopped before they could be closed)."""
    exception = context.get("exception")
    log.warning("asyncio: %s", context.get("message") or "error in the event loop", exc_info=exception)


@asynccontextmanager
async def open_bridge(max_queued: int = 1024, max_batch: int = 512) -> AsyncIterator[AsyncioBridge]:
    """A bridge to a trio-asyncio loop of its own, for the block; callers still waiting at its end get BridgeClosed.

    `max_queued` bounds the jobs waiting for the request pump (callers wait beyond it).
    """
    bridge = AsyncioBridge(max_queued, max_batch)

    async def pump(run: Callable[[], Awaitable[None]]) -> None:
        try:
            await trio_asyncio.aio_as_trio(run)()
        finally:
            bridge._close()  # cancelled (the block ends, or whatever encloses it was cancelled: a crash): nothing more crosses

    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_asyncio_error)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, bridge._result_pump)
                nursery.start_soon(pump, bridge._request_pump)
                try:
                    yield bridge
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            bridge._close()


__all__ = ["AsyncioBridge", "BridgeClosed", "BridgeStatistics", "open_bridge"]
