"""Micro-benchmark: what one web push costs, now that the web client keeps it for resume in the
State (append_recent) before it publishes it through the Broker to the registry.

    .venv/bin/python loadtests/bench_push.py [--pushes 50000] [--latency-ms 0.2]

Pushes as the web client does (`push_frame`: append to the recent pushes, then publish),
one session live per user, the registry offering each frame to it: `sequential` (one
pusher: the cost per push, on one core) and `64 users` (64 pushers at once: what a slow
State costs). Each runs on the embedded MemoryState and on one that waits `latency-ms` per
append (a Redis round trip; Trio's timer makes it about a millisecond: the line says how
long an append took). `--no-state` measures the same path without the append (the
reference of the same run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio.testing import wait_all_tasks_blocked  # noqa: E402

from actors.clients.web import push_frame  # noqa: E402
from actors.messages import Register  # noqa: E402
from actors.registry import ConnectionRegistry, RecentPushes, Session  # noqa: E402
from reactor.backends.embedded import MemoryBroker, MemoryState  # noqa: E402
from reactor.mailbox import Mailbox  # noqa: E402

FRAME = (b'{"type":"notification","id":"01J0000000000000000000000A","created_at":"2024-01-01T00:00:00.000Z",'
         b'"title":"Hi","body":"Hello there"}')


class RemoteState(MemoryState):
    """MemoryState behind a network round trip."""

    def __init__(self, latency_s: float) -> None:
        super().__init__()
        self.latency_s = latency_s
        self.appends = 0
        self.waited_s = 0.0

    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        start = time.perf_counter()
        await trio.sleep(self.latency_s)  # Trio's timer rounds a sleep up to about a millisecond
        await super().append_recent(key, item, max_items, ttl_s)
        self.appends += 1
        self.waited_s += time.perf_counter() - start


class NoRecent(MemoryState):
    """The reference: the same path with an append that does nothing."""

    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        return None


async def run(state: MemoryState, pushes: int, pushers: int) -> float:
    """Seconds per push."""
    mailbox: Mailbox = Mailbox("registry", 4096)
    broker = MemoryBroker(buffer=pushes + 1)
    recent = RecentPushes(state, per_user=512)
    registry = ConnectionRegistry(mailbox, broker, recent)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        sessions = [Session(f"user{u}", pushes + 1) for u in range(pushers)]
        for session in sessions:
            await mailbox.send(Register(session))
        await wait_all_tasks_blocked()  # the node subscribed to every user

        async def pusher(user: str, count: int) -> None:
            for i in range(count):
                await push_frame(broker, recent, user, f"01J{i:023d}", FRAME)

        start = time.perf_counter()
        async with trio.open_nursery() as pushing:
            for u in range(pushers):
                pushing.start_soon(pusher, f"user{u}", pushes // pushers)
        await wait_all_tasks_blocked()  # the registry offered the last frames
        elapsed = time.perf_counter() - start
        mailbox.close()
    return elapsed / (pushes // pushers * pushers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=float, default=0.2)
    args = parser.parse_args()
    for label, make in (("no append (reference)", lambda: NoRecent()),
                        ("embedded MemoryState", lambda: MemoryState()),
                        ("State with a slow append", lambda: RemoteState(args.latency_ms / 1000))):
        for pushers in (1, 64):
            state = make()
            slow_alone = pushers == 1 and isinstance(state, RemoteState)  # a millisecond a push: fewer of them
            pushes = args.pushes // 20 if slow_alone else args.pushes
            per_push = trio.run(run, state, pushes, pushers)
            waited = f"; an append took {state.waited_s / state.appends * 1e6:,.0f} us" if isinstance(state, RemoteState) else ""
            print(f"{label:>26}, {'sequential' if pushers == 1 else f'{pushers} users':>10}: {per_push * 1e6:7.1f} us per push"
                  f" ({1 / per_push:,.0f} pushes/s{waited})")


if __name__ == "__main__":
    main()
