"""The Redis State's hot calls: latency per call (sequential) and calls/s under concurrency.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/redis_state_bench.py [--calls 2000] [--concurrency 16]

Starts a redis-server of its own on a free loopback port (stopped at the end), opens the
Redis State as a node does (reactor/backends/redis), and measures, for take_tokens,
lease_tokens (a slice of 8, giving the last one back), breaker_admit, put_if_absent and get:
p50/p99 of `--calls` sequential calls, then calls/s with `--concurrency` tasks calling at
once (the pool's threads in parallel). Prints one line per operation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reactor.backends.redis import RedisState, opened_client  # noqa: E402
from reactor.circuit_breaker import BreakerConfig  # noqa: E402
from tests.servers import redis_server  # noqa: E402


async def measure(name: str, call: Callable[[int], Awaitable[Any]], calls: int, concurrency: int) -> None:
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        await call(i)
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    done = 0
    start = time.perf_counter()

    async def worker(w: int) -> None:
        nonlocal done
        for i in range(calls // concurrency):
            await call(w * calls + i)
            done += 1

    async with trio.open_nursery() as nursery:
        for w in range(concurrency):
            nursery.start_soon(worker, w)
    rate = done / (time.perf_counter() - start)
    print(f"{name:14} p50 {p50 * 1000:.3f} ms  p99 {p99 * 1000:.3f} ms  |  {concurrency} at once: {rate:,.0f} calls/s")


async def main(url: str, calls: int, concurrency: int) -> None:
    async with opened_client(url) as client:
        state = RedisState(client)
        config = BreakerConfig()
        held: dict[str, Any] = {}

        async def lease(i: int) -> None:
            give = held.get("lease")
            got = await state.lease_tokens("bench:lease", 8, 1e9, 1e9, 5.0, give)
            held["lease"] = (got.lease_id, 1) if got.granted else None

        await measure("take_tokens", lambda i: state.take_tokens("bench:take", 1, 1e9, 1e9), calls, concurrency)
        await measure("lease_tokens", lease, calls, concurrency)
        await measure("breaker_admit", lambda i: state.breaker_admit("bench:breaker", config, "w", 5.0), calls, concurrency)
        await measure("put_if_absent", lambda i: state.put_if_absent(f"bench:k{i}", b"v", 60), calls, concurrency)
        await measure("get", lambda i: state.get(f"bench:k{i}"), calls, concurrency)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as server:
        trio.run(main, server.url, args.calls, args.concurrency)
