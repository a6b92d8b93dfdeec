"""Run `herald` with a Trio Instrument that records how long each task step holds the event loop (CPU, not wall).

A benchmark helper, not a test; it imports whatever `actors` is on the path, so it profiles
another checkout's node too (`PYTHONPATH=<checkout>`):

    python loadtests/step_profile.py <out.json> serve --port 0 --data-dir herald-data-profile

Each task step (from Trio's `before_task_step` to `after_task_step`) is timed by
`time.thread_time()`: the CPU the loop's thread spent in it, which the machine's load does
not inflate (a step preempted by another process costs it nothing). Per task name it keeps
the count, the total, the max and a histogram (20 us buckets up to 200 ms), the ten
longest steps of all, and, for each step over 2 ms, where its task stopped (its innermost
awaits: the work of the step ran up to there; "[gc in the step]" when the garbage collector
took more than 1 ms of it). Per task name too, its turn's wait: the loop's CPU spent on
other tasks' steps between the task being made runnable and its step (how long a hop of a
request waits behind whatever else is runnable, without the machine's load in it). SIGUSR1 writes what was recorded since the last SIGUSR1 to <out.json>
and starts afresh (the benchmark sends one at the start and one at the end of a phase).
`STEP_PROFILE_GC_THRESHOLDS=7000,10,100` runs the node with other collector thresholds (an experiment).
"""

from __future__ import annotations

import gc
import heapq
import json
import os
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
        self.runnable_since: dict[trio.lowlevel.Task, float] = {}
        self.waits: dict[str, _Stats] = {}  # per task name: the loop's CPU between its being scheduled and its step
        self.gc_s = 0.0  # the collector's CPU so far (gc.callbacks)
        self.gc_before = 0.0
        self._gc_began = 0.0
        self.gc_passes: dict[int, tuple[int, float, float]] = {}  # generation -> passes, CPU s, longest s

    def gc_callback(self, phase: str, info: dict[str, int]) -> None:
        """The garbage collector's CPU, added up: a step's share is shown beside it (`gc`)."""
        if phase == "start":
            self._gc_began = time.thread_time()
        elif self._gc_began:
            spent = time.thread_time() - self._gc_began
            self.gc_s += spent
            self._gc_began = 0.0
            count, total, longest = self.gc_passes.get(info["generation"], (0, 0.0, 0.0))
            self.gc_passes[info["generation"]] = (count + 1, total + spent, max(longest, spent))

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        self.runnable_since[task] = time.thread_time()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = now = time.thread_time()
        self.gc_before = self.gc_s
        since = self.runnable_since.pop(task, None)
        if since is not None:  # the loop's CPU spent on other tasks while this one was runnable: its turn's wait
            waited = self.waits.get(task.name)
            if waited is None:
                waited = self.waits[task.name] = _Stats()
            spent = now - since
            waited.count += 1
            waited.total += spent
            waited.max = max(waited.max, spent)
            bucket = min(int(spent * 1e6) // BUCKET_US, BUCKETS)
            waited.hist[bucket] = waited.hist.get(bucket, 0) + 1

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
            gc_ms = (self.gc_s - self.gc_before) * 1000
            where = f"{name.rsplit('.', 1)[-1]} @ {' > '.join(frames)}" + (" [gc in the step]" if gc_ms > 1 else "")
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
                                  "gc": {str(g): {"passes": n, "total_ms": t * 1000, "max_ms": m * 1000}
                                         for g, (n, t, m) in sorted(self.gc_passes.items())},
                                  "waits": {name: {"count": w.count, "p50_ms": w.percentile(50), "p99_ms": w.percentile(99),
                                                   "max_ms": w.max * 1000} for name, w in self.waits.items()},
                                  "long": {where: {"count": n, "max_ms": m * 1000} for where, (n, m) in self.long.items()}}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        tmp.replace(self.out)
        self.stats, self.longest, self.long, self.since, self.gc_passes, self.waits = {}, [], {}, now, {}, {}


def main() -> None:
    out = Path(sys.argv[1])
    instrument = StepTimes(out)

    def asked(signum: int, frame: object) -> None:
        instrument.dump_asked = True  # written by the loop's thread at its next step's end

    signal.signal(signal.SIGUSR1, asked)
    gc.callbacks.append(instrument.gc_callback)
    trio.run = partial(trio.run, instruments=[instrument])  # type: ignore[assignment]  # the cli's trio.run(main)
    thresholds = os.environ.get("STEP_PROFILE_GC_THRESHOLDS")  # an experiment's knob: the serving collector's thresholds
    if thresholds:
        import reactor.gc_policy

        reactor.gc_policy.tune_for_serving.__defaults__ = (tuple(int(x) for x in thresholds.split(",")),)
    from actors.cli import main as herald

    sys.exit(herald(sys.argv[2:]))


if __name__ == "__main__":
    main()
