"""What the SSRF guard costs a webhook POST: the webhook client with and without it, CPU per POST, in one process and run.

    .venv/bin/python loadtests/webhook_guard_bench.py [--posts 3000] [--concurrency 64] [--rounds 3]

Against a local Hypercorn endpoint (tests/providers/webhook_receiver.py) in the same process, so the CPU figures include
the server's; the rounds alternate guarded and unguarded, and the ratio of their sums is the figure to read (a shared
machine's load moves both). The guard works once per connection (resolve, check, connect), and keep-alive reuses them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.providers: the endpoint

from actors.clients.http_api import http_client  # noqa: E402
from actors.clients.provider_config import WebhookProvider  # noqa: E402
from actors.clients.webhook import WebhookClient  # noqa: E402
from protocol.channels import Channel  # noqa: E402
from protocol.content import Content, WebhookContent  # noqa: E402
from protocol.messages import Delivery, Sent  # noqa: E402
from tests.providers.asgi_server import serving  # noqa: E402
from tests.providers.webhook_receiver import Receiver  # noqa: E402


async def run(client: WebhookClient, url: str, posts: int, concurrency: int) -> tuple[int, float]:
    """POSTs sent and the process's CPU seconds for them."""
    slots = trio.Semaphore(concurrency)
    sent = 0

    async def one(i: int) -> None:
        nonlocal sent
        async with slots:
            delivery = Delivery(f"n{i:025d}", f"u{i}", Channel.WEBHOOK, 0, Content(webhook=WebhookContent("t", "b")), address=url)
            outcome = await client.send(delivery)
        sent += isinstance(outcome, Sent)

    start = time.process_time()
    async with trio.open_nursery() as nursery:
        for i in range(posts):
            nursery.start_soon(one, i)
    return sent, time.process_time() - start


async def main(posts: int, concurrency: int, rounds: int) -> None:
    receiver = Receiver()
    async with serving(receiver) as base:
        url = base + "/hook"
        spec = WebhookProvider(secrets=(bytes(32),), allow_cidrs=("127.0.0.1/32",), max_connections=concurrency)
        guarded, bare = WebhookClient(spec), WebhookClient(spec)
        bare.http = http_client(spec.timeout_s, spec.max_connections, None, http2=False)  # the reference: no guard
        for client in (guarded, bare):
            await run(client, url, posts // 10, concurrency)  # warm up: connections open
        totals = {"guarded": 0.0, "unguarded": 0.0}
        for _ in range(rounds):
            for name, client in (("guarded", guarded), ("unguarded", bare)):
                sent, cpu = await run(client, url, posts, concurrency)
                receiver.received.clear()
                totals[name] += cpu
                print(f"{name}: {sent}/{posts} sent, {1000 * cpu / posts:.3f} ms CPU per POST (server included)")
        print(f"guarded / unguarded CPU: {totals['guarded'] / totals['unguarded']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.posts, args.concurrency, args.rounds)
