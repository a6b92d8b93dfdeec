"""CPU per notification of the batch path's actors, in one process: the Ingress and the Recorder on embedded backends.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/bench_ingest_cpu.py [--sizes 100,1000] [--rounds 3] [--in-flight 4] [--users N]

Per batch size and round, two runs, each in a fresh data dir: the Ingress (`accept_batch` of
web items to distinct users, `--in-flight` batches at once, the embedded bus) with its Recorder
(the embedded log store: plan, apply, one durable transaction), and with a Recorder that answers
at once (writes nothing). CPU time of the process (all threads) per notification, after a
warm-up; the difference is the Recorder's share. No HTTP, no wrk: on a shared machine these
figures move far less than bench_batch.py's, so compare two trees with them (the other tree's
code first on the path: `PYTHONPATH=/path/to/other/tree .venv/bin/python loadtests/bench_ingest_cpu.py`).
The garbage collector is tuned as `herald serve` tunes it (reactor/gc_policy.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from actors.config import load_config
from actors.ingress import Ingress
from actors.recorder import Recorder
from protocol.api import NotificationRequest
from reactor.backends import open_backends
from reactor.gc_policy import tune_for_serving
from reactor.mailbox import Mailbox


def requests(n: int, first: int = 0) -> list[NotificationRequest]:
    return [
        msgspec.convert({"user_id": f"bench-b{i}", "channels": ["web"], "content": {"web": {"title": "t", "body": "b"}}},
                        NotificationRequest)
        for i in range(first, first + n)
    ]


async def answer_at_once(mailbox: Mailbox[Any]) -> None:
    async for message in mailbox:
        if message.reply is not None:
            message.reply.send(None)


async def cpu_per_notification(size: int, calls: int, in_flight: int, record: bool, users: int = 0) -> float:
    """CPU microseconds per notification of `calls` batches of `size` (after a warm-up of 5 per task); `users`: the
    batches' users taken in turn from that many (0: every batch to the same `size` users, bench-b0 ...)."""
    batches = [requests(size, first) for first in range(0, max(size, users), size)]
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(env={}, data_dir=Path(tmp), host="127.0.0.1", port=0, api_key="k", log_level="WARNING")
        async with open_backends(config.backend_settings()) as backends, trio.open_nursery() as nursery:
            recorder_mb: Mailbox[Any] = Mailbox("recorder", 1000)
            if record:
                nursery.start_soon(Recorder(backends.logstore, recorder_mb, config.recorder_batch, config.commit_linger_ms / 1000).run)
            else:
                nursery.start_soon(answer_at_once, recorder_mb)
            ingress = Ingress(backends.bus, Mailbox("ingress", 1000), recorder_mb, workers=config.ingress_workers, record_deadline_s=None)
            await nursery.start(ingress.run)

            async def sender(count: int) -> None:
                for n in range(count):
                    await ingress.accept_batch(batches[n % len(batches)])

            for count in (5, max(1, calls // in_flight)):
                started = time.process_time()
                async with trio.open_nursery() as senders:
                    for _ in range(in_flight):
                        senders.start_soon(sender, count)
                spent = time.process_time() - started
            nursery.cancel_scope.cancel()
    return 1e6 * spent / (max(1, calls // in_flight) * in_flight * size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000", help="batch sizes, comma-separated (default 100,1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run (default 3)")
    parser.add_argument("--in-flight", type=int, default=4, help="batches at once (default 4)")
    parser.add_argument("--notifications", type=int, default=20_000, help="notifications per run (default 20,000)")
    parser.add_argument("--users", type=int, default=0,
                        help="take each batch's users in turn from this many (default 0: every batch to the same users, "
                             "as many as its items; the history's cost depends on how many rows each user has)")
    args = parser.parse_args()
    tune_for_serving()
    for size in (int(s) for s in args.sizes.split(",")):
        calls = max(args.in_flight, args.notifications // size)
        runs: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for record in (True, False):
                runs[record].append(trio.run(cpu_per_notification, size, calls, args.in_flight, record, args.users))
        with_, without = statistics.median(runs[True]), statistics.median(runs[False])
        print(f"batches of {size}: {with_:.1f} us CPU per notification with the Recorder ({', '.join(f'{x:.1f}' for x in runs[True])}), "
              f"{without:.1f} with its reply at once ({', '.join(f'{x:.1f}' for x in runs[False])}): "
              f"the Recorder {with_ - without:.1f} us; {1e6 / with_:,.0f} notifications per CPU second")


if __name__ == "__main__":
    main()
