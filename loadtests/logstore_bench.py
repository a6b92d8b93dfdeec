"""The log store's write cost per event: status events written in batches of 1,000, as the Recorder writes them.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/logstore_bench.py [--batches 20] [--rounds 3] [--batch 1000] [--cassandra start|URL]

It opens the embedded LogStore in a temporary directory on local disk (WAL,
synchronous=FULL: every batch is one durable transaction) and writes, per round, three
phases of `--batches` batches of 1,000 events each, over fresh notifications, half email
and half web:

- new: accepted + queued of 500 notifications (every (notification, channel) is new);
- advance: sent + delivered of the same 500 (web: `sent` with its inbox entry, then a
  client's `delivered`), so every event moves an existing status and counts;
- again: the advance batches once more, as a redelivery: every event is a repeat that
  changes nothing.

It writes through `actors.recorder.record_events` (the Recorder's own path: read the state
the planner needs, plan, apply the plan) when the tree has it, else through the older
`LogStore.record(events, inbox)`, so the same script measures the tree before and after
the write plan. Prints events/s per phase (median of the rounds) and the overall figure,
and the process's CPU time per event (all threads: the Trio thread plans, a worker thread
runs SQLite), which other load on the machine disturbs less than the wall clock.

`--cassandra start` measures the Cassandra LogStore instead, on a one-node Cassandra it starts
(tests/servers.py; scripts/install-engines.sh cassandra), `--cassandra cassandra://host:port/keyspace`
on a cluster of yours (the keyspace is created if missing). The CPU figure is then Herald's
side only (the server is another process). `--batch` sets the events per batch, each batch one
write plan: the latency of one plan (median and 90th percentile per phase) is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import trio

from protocol.channels import Channel, Priority
from protocol.ids import make_notification_id
from protocol.lifecycle import Status
from protocol.messages import InboxEntry, StatusEvent
from reactor.backends.embedded import SqliteLogStore

BATCH = 1000
T0 = 1_704_067_200_000

Writer = Callable[[Any, Sequence[StatusEvent], Sequence[InboxEntry]], Awaitable[None]]


def writer() -> tuple[str, Writer]:
    """The write path of this tree: the Recorder's plan and apply, or the older record()."""
    try:
        from actors.recorder import record_events
    except ImportError:
        async def old(store: SqliteLogStore, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry]) -> None:
            await store.record(events, inbox)  # type: ignore[attr-defined]

        return "LogStore.record", old

    async def new(store: SqliteLogStore, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry]) -> None:
        await record_events(store, events, inbox)

    return "actors.recorder.record_events", new


def batches(first: int, count: int, size: int = BATCH) -> tuple[list[list[StatusEvent]], list[tuple[list[StatusEvent], list[InboxEntry]]]]:
    """`count` batches of new notifications' first events, and of their next events (with inbox entries)."""
    new, advance = [], []
    per = max(1, size // 2)
    for b in range(count):
        created, moved, inbox = [], [], []
        for i in range(per):
            n = first + b * per + i
            nid = make_notification_id(T0 + n, n % 1000)
            channel = Channel.WEB if i % 2 else Channel.EMAIL
            user = f"user-{n % 97}"
            for k, status in enumerate((Status.ACCEPTED, Status.QUEUED)):
                created.append(StatusEvent(nid, user, channel, status, T0 + n + k, created_ms=T0 + n, priority=Priority.NORMAL))
            sent = StatusEvent(nid, user, channel, Status.SENT, T0 + n + 5, detail="handed over", created_ms=T0 + n)
            done = StatusEvent(
                nid, user, channel, Status.DELIVERED, T0 + n + 9, created_ms=T0 + n,
                detail="acknowledged by the client" if channel is Channel.WEB else "", client=channel is Channel.WEB,
            )
            moved += [sent, done]
            if channel is Channel.WEB:
                inbox.append(InboxEntry(nid, user, T0 + n, f"title {n}", body="body", seq=n))
        new.append(created)
        advance.append((moved, inbox))
    return new, advance


def open_store(tmp: Path, cassandra: str | None, stack: ExitStack) -> Any:
    """The store measured: SQLite in `tmp`, or the Cassandra LogStore (on a node started here, or the URL's cluster)."""
    if cassandra is None:
        return SqliteLogStore(tmp / "logs.sqlite3")
    from reactor.backends.cassandra import CassandraLogStore, parse_url

    if cassandra == "start":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.servers import cassandra_server

        server = stack.enter_context(cassandra_server(tmp / "cassandra"))
        print(f"Cassandra started in {server.start_s:.1f}s on port {server.port}")
        cassandra = f"{server.url}/logstore_bench"
    return CassandraLogStore(parse_url(cassandra))


async def run(count: int, rounds: int, size: int = BATCH, cassandra: str | None = None) -> None:
    name, write = writer()
    print(f"write path: {name}; {count} batches of {size} events per phase, {rounds} round(s)")
    rates: dict[str, list[float]] = {"new": [], "advance": [], "again": []}
    cpu: dict[str, list[float]] = {"new": [], "advance": [], "again": []}
    plan_ms: dict[str, list[float]] = {"new": [], "advance": [], "again": []}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp, ExitStack() as stack:
        store = open_store(Path(tmp), cassandra, stack)
        await store.open()
        events_per = 2 * max(1, size // 2)
        try:
            for r in range(rounds):
                new, advance = batches(r * count * events_per + (time.time_ns() // 1000 % 10**9 if cassandra else 0), count, size)
                phases: list[tuple[str, list[tuple[list[StatusEvent], list[InboxEntry]]]]] = [
                    ("new", [(events, []) for events in new]), ("advance", advance), ("again", advance),
                ]
                for phase, work in phases:
                    started, cpu_started = time.perf_counter(), time.process_time()
                    for events, inbox in work:
                        one = time.perf_counter()
                        await write(store, events, inbox)
                        plan_ms[phase].append((time.perf_counter() - one) * 1000)
                    elapsed, used = time.perf_counter() - started, time.process_time() - cpu_started
                    rates[phase].append(count * events_per / elapsed)
                    cpu[phase].append(used * 1e6 / (count * events_per))
                    print(f"  round {r + 1} {phase:8s} {count * events_per / elapsed:9,.0f} events/s {cpu[phase][-1]:6.1f} us CPU/event")
        finally:
            await store.close()
    print("per plan (one batch read, planned and applied), ms: " + ", ".join(
        f"{p} p50 {statistics.median(v):.1f} p90 {statistics.quantiles(v, n=10)[-1] if len(v) > 1 else v[0]:.1f}"
        for p, v in plan_ms.items()))
    print("median events/s: " + ", ".join(f"{p} {statistics.median(v):,.0f}" for p, v in rates.items()))
    print("median CPU us/event (all threads): " + ", ".join(f"{p} {statistics.median(v):.1f}" for p, v in cpu.items()))
    overall = [3 / sum(1 / v[i] for v in rates.values()) for i in range(rounds)]
    overall_cpu = [sum(v[i] for v in cpu.values()) / 3 for i in range(rounds)]
    print(f"overall (the three phases together): {statistics.median(overall):,.0f} events/s,"
          f" {statistics.median(overall_cpu):.1f} us CPU/event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 events per phase (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three phases (default 3)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"events per batch, one write plan each (default {BATCH})")
    parser.add_argument("--cassandra", help="`start` (a one-node Cassandra started here) or a cassandra:// LogStore URL")
    args = parser.parse_args()
    trio.run(run, args.batches, args.rounds, args.batch, args.cassandra)


if __name__ == "__main__":
    main()
