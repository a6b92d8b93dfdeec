"""What the metrics cost on the hot paths, in CPU: a benchmark script, not a test.

    .venv/bin/python loadtests/metrics_cost.py [--requests 200000]

1. The request layer (actors/api/request_metrics.py) around an ASGI app that answers at
   once: CPU per request with and without it, in one process, alternately (3 rounds);
   the difference is what the layer adds to every request. The Quart routes' extra
   before_request hook (`note_route`) is timed alone.
2. The consumer's outcome count: one dict increment per concluded attempt.
3. A scrape of a node of the role `all` that has served some traffic: CPU per scrape
   (the port-backed reads included), and the size of the exposition.

Figures are CPU seconds (time.process_time) of this process: on a busy machine they move
less than wall-clock rates. Stops by itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: its packages and tests.helpers

from actors.api.request_metrics import RequestMetrics  # noqa: E402
from actors.metrics import RequestStats, new_outcomes  # noqa: E402


async def answer(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


async def nothing(message) -> None:
    return None


async def receive() -> dict:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def per_request_us(app, n: int) -> float:
    scope = {"type": "http", "method": "POST", "path": "/v1/notifications", "headers": [], "query_string": b""}
    start = time.process_time()
    for _ in range(n):
        await app(dict(scope), receive, nothing)
    return (time.process_time() - start) / n * 1e6


async def layer(n: int) -> None:
    wrapped = RequestMetrics(answer, RequestStats())
    bare_us, wrapped_us = [], []
    for _ in range(3):
        bare_us.append(await per_request_us(answer, n))
        wrapped_us.append(await per_request_us(wrapped, n))
    bare, with_layer = statistics.median(bare_us), statistics.median(wrapped_us)
    print(f"request layer: {bare:.2f} us/request bare, {with_layer:.2f} with RequestMetrics: +{with_layer - bare:.2f} us per request "
          f"(medians of 3 x {n})")


def outcome_count(n: int) -> None:
    counts = new_outcomes()
    start = time.process_time()
    for _ in range(n):
        counts["delivered"] += 1
    print(f"consumer outcome count: {(time.process_time() - start) / n * 1e6:.3f} us per attempt")


async def scrape_cost() -> None:
    from tests.helpers import all_channels, http, running_node, wait_final

    with tempfile.TemporaryDirectory() as tmp:
        async with running_node(Path(tmp)) as herald, http(herald) as client:
            ids = [(await client.post("/v1/notifications", json=all_channels(f"u{i}"))).json()["notification_id"] for i in range(20)]
            for nid in ids:
                await wait_final(client, nid)
            metrics = herald.metrics
            assert metrics is not None
            await metrics.scrape()
            rounds = 200
            start = time.process_time()
            for _ in range(rounds):
                body, _ = await metrics.scrape()
            cached = (time.process_time() - start) / rounds * 1e3
            start = time.process_time()
            for _ in range(20):
                await trio.sleep(1.01)  # past CACHE_S: every scrape reads the ports again
                body, _ = await metrics.scrape()
            fresh = (time.process_time() - start) / 20 * 1e3
            print(f"scrape of an all node: {cached:.2f} ms CPU from the cache, {fresh:.2f} ms CPU with the ports read again; "
                  f"{len(body)} bytes, {sum(1 for line in body.splitlines() if not line.startswith(b'#'))} samples")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    await layer(args.requests)
    outcome_count(args.requests * 5)
    await scrape_cost()


if __name__ == "__main__":
    trio.run(main)
