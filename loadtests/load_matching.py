"""Matching a subscriber's sends to the frames that carry them, by notification id: pure, no locust.

loadtests/locustfile.py's Subscriber and SseSubscriber keep one `Deliveries` each and
report every match (POST start -> frame) as a `deliver:web` / `deliver:sse` sample;
tests/load/test_load_matching.py checks it without locust.
"""

from __future__ import annotations

import time
from typing import Callable

Report = Callable[[float, int, "str | None"], None]  # (milliseconds, frame bytes, error or None)


class Deliveries:
    """The sends a subscriber made to itself, waiting for their frames; a frame may beat its POST's 202."""

    def __init__(self, report: Report, timeout_s: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.report = report
        self.timeout_s = timeout_s
        self.clock = clock
        self.pending: dict[str, float] = {}  # id -> POST start, posted (202 in hand) and not seen yet
        self.early: dict[str, tuple[float, int]] = {}  # id -> (seen at, frame bytes): the frame came before the 202

    def posted(self, nid: str, started: float) -> None:
        """The POST that started at `started` got `nid` back."""
        seen = self.early.pop(nid, None)
        if seen is None:
            self.pending[nid] = started
        else:
            self.report((seen[0] - started) * 1000, seen[1], None)

    def seen(self, nid: str, length: int) -> None:
        """A frame of `length` bytes carrying `nid` arrived."""
        now = self.clock()
        started = self.pending.pop(nid, None)
        if started is None:
            self.early[nid] = (now, length)
        else:
            self.report((now - started) * 1000, length, None)

    def expire(self, final: bool = False) -> None:
        """Report as failures the sends whose frame is overdue (every one still waiting when `final`)."""
        now = self.clock()
        for nid, started in list(self.pending.items()):
            if final or now - started > self.timeout_s:
                del self.pending[nid]
                why = "no frame by the end of the run" if final else f"no frame within {self.timeout_s:g} s"
                self.report((now - started) * 1000, 0, f"{why} ({nid})")
        for nid, (at, _) in list(self.early.items()):  # a frame for an id this user never got a 202 for: dropped
            if final or now - at > self.timeout_s:
                del self.early[nid]
