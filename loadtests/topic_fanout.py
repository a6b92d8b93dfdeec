"""Topic fan-out: a topic of N subscribers (100,000 by default), the fan-out killed with kill -9 mid-way and resumed.

Runs tests/topics/fanout_crash.py's `run_crash` (the suite's check runs it with 20,000) on a
fresh data directory and prints its figures: subscribers, the time to PUT them (batches of
1,000, four calls at a time), where the kill came, the fan-out's time from the 202 to `done`
(the restart included) and subscribers expanded per second over it, the time until every
subscriber's copy was answered `sent` by the sandbox SMS provider, provider calls,
deliveries, duplicates (calls after a sent answer), missing, and calls made again after one
the kill cut off.

    .venv/bin/python loadtests/topic_fanout.py                     # 100,000, provider down until the kill
    .venv/bin/python loadtests/topic_fanout.py --provider up       # deliveries flow while it is killed
    .venv/bin/python loadtests/topic_fanout.py --subscribers 20000 --kill-at 0.3

`--provider down` (the default) makes the sandbox SMS provider fail every call until the kill,
so that no delivery is in flight when it comes: exactly one sent call per subscriber is then
the fan-out's promise alone. `--provider up` shows a realistic kill, where the calls in flight
may be made again (the crash window of every delivery, docs/reliability.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.topics.fanout_crash import run_crash  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--kill-at", type=float, default=0.5, help="the share of subscribers expanded when the node is killed")
    parser.add_argument("--provider", choices=("down", "up"), default="down")
    parser.add_argument("--timeout", type=float, default=1800, help="bound on each wait, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="herald-fanout-") as tmp:
        started = time.perf_counter()
        figures = trio.run(lambda: run_crash(
            Path(tmp) / "data", args.subscribers, kill_at=args.kill_at, timeout_s=args.timeout, progress=True,
            provider_down=args.provider == "down",
        ))
        print(f"provider {args.provider}: {figures.line()} total_s={time.perf_counter() - started:.1f}")
        print(f"status: {figures.status}")
        ok = figures.missing == 0 and figures.duplicates == 0 and figures.strangers == 0
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
