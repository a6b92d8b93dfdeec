"""Run `herald` with a Trio Instrument that records how long each task step holds the event loop (CPU, not wall).

A benchmark helper, not a test; it imports whatever `actors` is on the path, so it profiles
another checkout's node too (`PYTHONPATH=<checkout>`):

    python loadtests/step_profile.py <out.json> serve --port 0 --data-dir /tmp/x

Each task step (from Trio's `before_task_step` to `after_task_step`) is timed by
`time.thread_time()`: the CPU the loop's thread spent in it, which the machine's load does
not inflate (a step preempted by another process costs it nothing). Per task name it keeps
the count, the total, the max and a histogram (20 us buckets up to 200 ms), the ten
longest steps of all, and, for each step over 2 ms, where its task stopped (its innermost
awaits: the work of the step ran up to there). SIGUSR1 writes what was recorded since the last SIGUSR1 to <out.json>
and starts afresh (the benchmark sends one at the start and one at the end of a phase).
"""

from __future__ import annotations

import heapq
import json
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.abc

BUCKET_US = 20
BUCKETS = 10_000  # 200 ms: longer steps land in the last bucket (their max is kept exactly)
LONG_S = 0.002  # a step longer than this is also counted by where it ended (the awaits its task stopped in)
WHERE_FRAMES = 4
_TRIO = str(Path(trio.__file__).parent)  # Trio's own frames are left out of `where`


class _Stats:
    __slots__ = ("count", "total", "max", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.hist: dict[int, int] = {}

    def percentile(self, q: float) -> float:
        """The upper edge of the bucket holding the q-th percentile step, in ms."""
        rank = q / 100 * self.count
        seen = 0
        for bucket in sorted(self.hist):
            seen += self.hist[bucket]
            if seen >= rank:
                return min((bucket + 1) * BUCKET_US / 1000, self.max * 1000)
        return self.max * 1000


class StepTimes(trio.abc.Instrument):
    """CPU per task step, per task name; dumped and reset when asked (`dump_to` set by a signal handler)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.started = 0.0
        self.stats: dict[str, _Stats] = {}
        self.longest: list[tuple[float, str]] = []  # a min-heap of the ten longest steps
        self.long: dict[str, tuple[int, float]] = {}  # steps over LONG_S: where each ended -> count, max
        self.dump_asked = False
        self.since = time.monotonic()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        spent = time.thread_time() - self.started
        name = task.name
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = _Stats()
        stats.count += 1
        stats.total += spent
        if spent > stats.max:
            stats.max = spent
        bucket = min(int(spent * 1e6) // BUCKET_US, BUCKETS)
        stats.hist[bucket] = stats.hist.get(bucket, 0) + 1
        if len(self.longest) < 10:
            heapq.heappush(self.longest, (spent, name))
        elif spent > self.longest[0][0]:
            heapq.heapreplace(self.longest, (spent, name))
        if spent > LONG_S:  # where it stopped: the awaits it is suspended in (its next step starts there)
            frames = [f.f_code.co_qualname for f, _ in task.iter_await_frames() if _TRIO not in f.f_code.co_filename][-WHERE_FRAMES:]
            where = f"{name.rsplit('.', 1)[-1]} @ {' > '.join(frames)}"
            seen = self.long.get(where)
            self.long[where] = (1, spent) if seen is None else (seen[0] + 1, max(seen[1], spent))
        if self.dump_asked:
            self.dump()

    def dump(self) -> None:
        self.dump_asked = False
        now = time.monotonic()
        tasks = {
            name: {"count": s.count, "total_ms": s.total * 1000, "max_ms": s.max * 1000, "p99_ms": s.percentile(99),
                   "p50_ms": s.percentile(50)}
            for name, s in self.stats.items()
        }
        report: dict[str, Any] = {"wall_s": now - self.since, "tasks": tasks,
                                  "longest": [{"ms": spent * 1000, "task": name} for spent, name in sorted(self.longest, reverse=True)],
                                  "long": {where: {"count": n, "max_ms": m * 1000} for where, (n, m) in self.long.items()}}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        tmp.replace(self.out)
        self.stats, self.longest, self.long, self.since = {}, [], {}, now


def main() -> None:
    out = Path(sys.argv[1])
    instrument = StepTimes(out)

    def asked(signum: int, frame: object) -> None:
        instrument.dump_asked = True  # written by the loop's thread at its next step's end

    signal.signal(signal.SIGUSR1, asked)
    trio.run = partial(trio.run, instruments=[instrument])  # type: ignore[assignment]  # the cli's trio.run(main)
    from actors.cli import main as herald

    sys.exit(herald(sys.argv[2:]))


if __name__ == "__main__":
    main()
