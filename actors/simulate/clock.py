"""The simulation's Trio clock: virtual time that stands still while tasks run and jumps to the next deadline when none can.

What `trio.testing.MockClock(autojump_threshold=0)` does, for less: Trio's run loop asks the clock how long to
sleep until the next deadline only when no task is runnable (trio/_core/_run.py, `unrolled_run`), and that is
exactly the moment MockClock's autojump moves time. MockClock answers "forever", lets the loop poll for I/O,
then jumps (reading `current_statistics()` to find how far) and takes a second turn of the loop to expire the
deadline; this clock moves its time to the deadline when asked and answers 0, so the same turn expires it and
runs the woken tasks. The tasks run in the same batches, in the same order (a turn with nothing to run draws
nothing from Trio's scheduling generator), at the same instants; its reading is an attribute, not a
perf_counter() through MockClock's rate arithmetic. Only for a run where nothing waits for a thread or I/O: the
simulation's ports are in memory (reactor/backends/memory), so nothing is lost by not sleeping.
"""

from __future__ import annotations

import math

import trio

FOREVER_S = 86_400.0  # no deadline at all: nothing will ever wake a task (a simulation's defect): sleep as Trio would


class JumpingClock(trio.abc.Clock):
    """Virtual seconds from `start`; time moves only to the next deadline, when no task can run."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def start_clock(self) -> None:
        return None

    def current_time(self) -> float:
        return self.now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        """Asked by the run loop only when no task is runnable: time moves to `deadline`, and there is no wait."""
        if deadline == math.inf:
            return FOREVER_S
        if deadline > self.now:
            self.now = deadline
        return 0.0


__all__ = ["JumpingClock"]
