"""reactor/port_health.py (what /readyz reports) and reactor/log_limit.py (a client's retry flood in the log)."""

from __future__ import annotations

import logging

import trio

from reactor.log_limit import RateLimit, limit_loggers
from reactor.port_health import PortHealth


async def test_a_port_marked_down_is_checked_until_it_works_and_only_then():
    works = False
    calls = 0

    async def check() -> None:
        nonlocal calls
        calls += 1
        if not works:
            raise OSError("refused")

    health = PortHealth({"bus": check}, every_s=0.01, timeout_s=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(health.run)
        await trio.sleep(0.05)
        assert calls == 0 and health.down() == {}  # nothing probed while all is well
        health.failed("bus", "append not acknowledged")
        health.failed("logstore", "cassandra away")  # no check: its owner marks it up
        with trio.fail_after(5):
            while calls < 3:
                await trio.sleep(0.01)
        assert set(health.down()) == {"bus", "logstore"}
        works = True
        with trio.fail_after(5):
            while "bus" in health.down():
                await trio.sleep(0.01)
        assert health.down() == {"logstore": "cassandra away"}
        health.recovered("logstore")
        settled = calls
        await trio.sleep(0.05)
        assert calls == settled and health.down() == {}
        health.stop()


async def test_a_check_that_hangs_counts_as_failed():
    async def hangs() -> None:
        await trio.sleep_forever()

    health = PortHealth({"bus": hangs}, every_s=0.01, timeout_s=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(health.run)
        health.failed("bus", "x")
        with trio.fail_after(5):
            while health.checks_run < 2:
                await trio.sleep(0.01)
        assert "bus" in health.down()
        health.stop()


def test_a_repeated_line_passes_a_few_times_per_window_then_is_counted():
    now = [0.0]
    limit = RateLimit(burst=3, window_s=10, clock=lambda: now[0])
    logger = logging.getLogger("limited.child")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    logger.propagate = False
    remove = limit_loggers("limited", limit)  # the child logger too (a parent's filter would not apply to it)
    try:
        for i in range(1000):
            logger.warning("retrying node %s", i)
        logger.warning("another kind")
        assert seen == ["retrying node 0", "retrying node 1", "retrying node 2", "another kind"]
        now[0] = 10.0
        logger.warning("retrying node %s", "x")
        assert seen[-1] == "retrying node x [997 similar lines dropped in the last 10 s]"
        assert limit.dropped == 997
        remove()
        logger.warning("retrying node %s", "y")
        assert seen[-1] == "retrying node y"  # taken off: every line again
    finally:
        remove()
        logger.removeHandler(handler)
