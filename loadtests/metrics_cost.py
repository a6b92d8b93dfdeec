"""What the metrics cost on the hot paths, in CPU: a benchmark script, not a test.

    .venv/bin/python loadtests/metrics_cost.py [--requests 200000]

1. The request layer (actors/api/request_metrics.py) around an ASGI app that answers at
   once: CPU per request with and without it, in one process, alternately (3 rounds);
   the difference is what the layer adds to every request. The Quart routes' extra
   before_request hook (`note_route`) is timed alone.
2. The consumer's outcome count: one dict increment per concluded attempt.
3. A scrape of a node of the role `all` that has served some traffic: CPU per scrape
   (the port-backed reads included), and the size of the exposition.
4. The real path: a node in this process takes POST /v1/notifications (web) through its
   ASGI stack with no socket, 50 senders at once, in blocks of `--block`, alternately through the front end's
   app (with the request layer) and through the fast path alone (without it); each block
   is timed until the delivery pipeline has drained it (the web partitions' lag back to
   0), so a figure is CPU per notification accepted and delivered.

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


async def real_path(block: int, rounds: int) -> None:
    import json

    from protocol.channels import Channel
    from tests.helpers import running_node, web_notification

    body = json.dumps(web_notification("bench-u1", "t")).encode()
    headers = [(b"authorization", b"Bearer test-key"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/v1/notifications", "headers": headers, "query_string": b"",
             "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "root_path": ""}

    async def receive_body() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def keep(message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    with tempfile.TemporaryDirectory() as tmp:
        async with running_node(Path(tmp)) as herald:
            front = herald.front
            assert front is not None and front.fast is not None
            bus, topic = herald.bus, Channel.WEB.topic()

            async def drained() -> None:
                with trio.fail_after(120):
                    while True:
                        lag = 0
                        for partition in range(bus.partitions(topic)):
                            lag += await bus.end_offset(topic, partition) - await bus.committed("herald-web", topic, partition)
                        if lag == 0:
                            return
                        await trio.sleep(0.05)

            async def run_block(app) -> float:
                async def sender(count: int) -> None:
                    for _ in range(count):
                        await app(dict(scope), receive_body, keep)

                start = time.process_time()
                async with trio.open_nursery() as nursery:  # 50 at once, as bench.py's 50 connections
                    for _ in range(50):
                        nursery.start_soon(sender, block // 50)
                await drained()
                return (time.process_time() - start) / (block // 50 * 50) * 1e6

            await run_block(front.app)  # warm-up
            with_layer, without = [], []
            for _ in range(rounds):
                with_layer.append(await run_block(front.app))
                without.append(await run_block(front.fast))
            assert set(statuses) == {202}, set(statuses)
            a, b = statistics.median(with_layer), statistics.median(without)
            print(f"real POST path (web, accepted and delivered): {b:.0f} us CPU/notification without the request layer, "
                  f"{a:.0f} with it ({(a - b) / b * 100:+.1f} %); runs {[round(x) for x in without]} vs {[round(x) for x in with_layer]}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--block", type=int, default=2000, help="POSTs per block of the real path (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="blocks each way on the real path (default 5)")
    args = parser.parse_args()
    await layer(args.requests)
    outcome_count(args.requests * 5)
    await scrape_cost()
    await real_path(args.block, args.rounds)


if __name__ == "__main__":
    trio.run(main)
