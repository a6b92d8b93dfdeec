"""deliver:web's matching (loadtests/load_matching.py): a frame to its POST by id, in either order, overdue ones failed."""

from __future__ import annotations

from loadtests.load_matching import Deliveries


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(timeout_s: float = 10.0):
    reports: list[tuple[float, int, str | None]] = []
    clock = Clock()
    return Deliveries(lambda ms, size, error: reports.append((round(ms), size, error)), timeout_s, clock), reports, clock


def test_a_frame_after_its_202_is_timed_from_the_post_start():
    deliveries, reports, clock = make()
    deliveries.posted("A", started=100.0)
    clock.now = 100.25
    deliveries.seen("A", 120)
    assert reports == [(250, 120, None)] and not deliveries.pending


def test_a_frame_that_beats_its_202_is_matched_when_the_202_comes():
    deliveries, reports, clock = make()
    clock.now = 100.05
    deliveries.seen("B", 90)  # the POST started at 100.0 has not returned yet
    assert reports == []
    clock.now = 100.2
    deliveries.posted("B", started=100.0)
    assert reports == [(50, 90, None)] and not deliveries.early


def test_a_frame_that_never_comes_is_a_failure_after_the_timeout_and_at_the_end():
    deliveries, reports, clock = make(timeout_s=10)
    deliveries.posted("C", started=100.0)
    deliveries.posted("D", started=105.0)
    clock.now = 111.0
    deliveries.expire()
    assert reports == [(11000, 0, "no frame within 10 s (C)")]
    deliveries.expire(final=True)
    assert reports[1] == (6000, 0, "no frame by the end of the run (D)")
    assert not deliveries.pending


def test_a_frame_for_an_id_never_posted_is_dropped_without_a_sample():
    deliveries, reports, clock = make(timeout_s=1)
    deliveries.seen("Z", 10)
    clock.now = 102.0
    deliveries.expire()
    assert reports == [] and not deliveries.early
