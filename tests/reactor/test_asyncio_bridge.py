"""reactor/asyncio_bridge.py: Trio calls asyncio coroutines through one loop and two batching pumps."""

from __future__ import annotations

import asyncio

import pytest
import trio

from reactor.asyncio_bridge import BridgeClosed, open_bridge


async def test_a_call_returns_the_coroutines_result_or_raises_its_exception() -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0)  # asyncio's own sleep: this runs on the asyncio loop
        return n * 2

    async def fail() -> None:
        await asyncio.sleep(0)
        raise KeyError("asyncio side")

    async with open_bridge() as bridge:
        assert await bridge.call(lambda: double(21)) == 42
        with pytest.raises(KeyError, match="asyncio side"):
            await bridge.call(fail)


async def test_concurrent_calls_share_crossings() -> None:
    """Calls queued together cross in one batch each way: far fewer crossings than calls."""
    async with open_bridge() as bridge:
        results: dict[int, int] = {}

        async def caller(i: int) -> None:
            async def work() -> int:
                await asyncio.sleep(0)
                return i

            results[i] = await bridge.call(work)

        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(caller, i)
        assert results == {i: i for i in range(500)}
        stats = bridge.statistics
        assert stats.calls == 500
        assert stats.request_batches <= 50 and stats.result_batches <= 50, stats


async def test_a_cancelled_caller_cancels_the_asyncio_task() -> None:
    seen: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async with open_bridge() as bridge:
        with trio.move_on_after(0.2):
            await bridge.call(forever)
        with trio.fail_after(10):
            while not seen:
                await trio.sleep(0.01)
        assert seen == ["cancelled"]
        assert await bridge.call(lambda: asyncio.sleep(0, "still serving")) == "still serving"


async def test_callers_waiting_when_the_bridge_closes_get_bridge_closed() -> None:
    errors: list[BaseException] = []

    async def caller(bridge: object) -> None:
        try:
            await bridge.call(lambda: asyncio.sleep(3600))  # type: ignore[attr-defined]
        except BridgeClosed as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        async with open_bridge() as bridge:
            nursery.start_soon(caller, bridge)
            await trio.sleep(0.1)
        with trio.fail_after(10):
            while not errors:
                await trio.sleep(0.01)
    assert isinstance(errors[0], BridgeClosed)
    with pytest.raises(BridgeClosed):
        await bridge.call(lambda: asyncio.sleep(0))


async def test_a_crash_of_the_enclosing_scope_fails_later_calls_at_once() -> None:
    """The block cancelled from outside (a crash): the pumps are gone, and a (shielded) call made while
    unwinding, such as closing a client, fails with BridgeClosed instead of waiting forever."""
    outcome: list[str] = []
    with trio.CancelScope() as scope:
        async with open_bridge() as bridge:
            try:
                scope.cancel()
                await trio.sleep(1)
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(10):
                    try:
                        await bridge.call(lambda: asyncio.sleep(0))
                        outcome.append("answered")
                    except BridgeClosed:
                        outcome.append("closed")
    assert outcome == ["closed"]


async def test_asyncio_side_errors_reported_to_the_loop_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A library reporting to the loop's exception handler (aiokafka: "Unclosed AIOKafkaConsumer") must not
    take the bridge down (trio-asyncio's default handler raises it into the loop's nursery)."""

    async def report() -> str:
        asyncio.get_running_loop().call_exception_handler({"message": "Unclosed SomeClient"})
        await asyncio.sleep(0)
        return "went on"

    async with open_bridge() as bridge:
        assert await bridge.call(report) == "went on"
        await trio.sleep(0.05)
        assert await bridge.call(lambda: asyncio.sleep(0, "alive")) == "alive"
    assert "Unclosed SomeClient" in caplog.text


async def test_to_trio_runs_trio_code_for_the_asyncio_side() -> None:
    got = trio.Event()

    async def on_trio(value: int) -> int:
        await trio.lowlevel.checkpoint()
        got.set()
        return value + 1

    async with open_bridge() as bridge:

        async def asyncio_side() -> int:
            return await bridge.to_trio(on_trio, 1)

        assert await bridge.call(asyncio_side) == 2
        assert got.is_set()
