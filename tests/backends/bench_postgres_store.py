"""The Store's hot calls on PostgreSQL (a throwaway server of tests/servers.py) beside the embedded store: calls/s.

    .venv/bin/python -m tests.backends.bench_postgres_store [--calls 3000] [--callers 16] [--pool-sizes 4,8]

Prints, for each backend, mark_sent (the send ledger), sent_status, schedule (calls/s, p50, p99) and
claim_due + unschedule by 100 (entries/s). A figure to compare on one machine in one run, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from reactor.backends import BackendSettings, open_backends
from reactor.ports import Scheduled
from tests.servers import postgres_cluster


async def calls_per_s(label: str, calls: int, callers: int, make: Callable[[int], Awaitable[Any]]) -> None:
    latencies: list[float] = []

    async def caller(first: int) -> None:
        for i in range(first, calls, callers):
            started = time.perf_counter()
            await make(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(callers):
            nursery.start_soon(caller, n)
    elapsed = time.perf_counter() - started
    latencies.sort()
    print(f"{label}: {calls / elapsed:,.0f}/s, p50 {latencies[len(latencies) // 2] * 1000:.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms")


async def bench(url: str, name: str, calls: int, callers: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        async with open_backends(BackendSettings({"store": url}, Path(data), {}), ["store"]) as backends:
            store = backends.store
            await calls_per_s(f"{name} mark_sent", calls, callers, lambda i: store.mark_sent(f"n{i}", "sms", "sent", 1))
            await calls_per_s(f"{name} sent_status", calls, callers, lambda i: store.sent_status(f"n{i}", "sms"))
            await calls_per_s(f"{name} schedule", calls, callers, lambda i: store.schedule(Scheduled(f"e{i:07}", i, "t", b"k", b"v")))
            started, claimed = time.perf_counter(), 0
            while batch := await store.claim_due("bench", 10**12, 100, 60_000):
                claimed += len(batch)
                await store.unschedule([entry.id for entry in batch])
            print(f"{name} claim_due + unschedule by 100: {claimed / (time.perf_counter() - started):,.0f} entries/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--pool-sizes", default="4,8")
    args = parser.parse_args()
    with postgres_cluster() as cluster:
        for size in (int(s) for s in args.pool_sizes.split(",")):
            url = f"{cluster.endpoint.url}?schema=bench{uuid.uuid4().hex[:8]}&pool_size={size}"
            trio.run(bench, url, f"postgres (pool {size})", args.calls, args.callers)
    trio.run(bench, "embedded://", "embedded", args.calls, args.callers)


if __name__ == "__main__":
    main()
