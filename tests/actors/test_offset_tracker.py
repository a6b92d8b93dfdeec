"""The offset tracker (actors/domain/offset_tracker.py): out-of-order completion, in-order commit.

Property (Hypothesis): offsets are handed out in order, with gaps (a bus may skip some),
and finish in any order, interleaved with more being handed out. After every step the
committable offset is at most the lowest unfinished offset (never past a record still
out), never goes back, and is exactly the lowest unfinished one (or the position, with
nothing out): so once every record has finished, everything is committable. The same
property fails on a tracker that commits past the highest finished offset and on one that
waits for offsets the bus skipped.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from actors.domain.offset_tracker import OffsetTracker

# A step: ("start", gap before the next offset) or ("finish", which of the offsets out, as a fraction of their count).
steps = st.lists(st.one_of(st.tuples(st.just("start"), st.sampled_from([0, 0, 0, 1, 3])), st.tuples(st.just("finish"), st.floats(0, 1))),
                 max_size=80)


def tracker_property(tracker_class: type[OffsetTracker], **overrides: Any) -> Any:
    @given(st.integers(0, 1000), steps)
    @settings(**overrides)
    def check(start: int, plan: list[tuple[str, Any]]) -> None:
        tracker = tracker_class(start)
        position, out = start, []
        last = tracker.committable
        assert last == start
        for kind, arg in [*plan, *[("finish", 0.0)] * 200]:  # then everything out finishes
            if kind == "start":
                offset = position + arg
                tracker.start(offset)
                out.append(offset)
                position = offset + 1
            elif out:
                offset = out.pop(min(len(out) - 1, int(arg * len(out))))
                tracker.finish(offset)
            committable = tracker.committable
            assert all(committable <= o for o in out), f"committable {committable} past {min(out)}, still out"
            assert committable >= last, f"went back from {last} to {committable}"
            assert committable == (min(out) if out else position), f"committable {committable}, could commit {min(out) if out else position}"
            last = committable
        assert not out and tracker.committable == position and tracker.outstanding == 0

    return check


def test_the_tracker_never_commits_past_an_unfinished_record_and_commits_all_once_all_finish() -> None:
    tracker_property(OffsetTracker, max_examples=300)()


def test_an_offset_is_handed_out_once_and_finished_once() -> None:
    tracker = OffsetTracker(5)
    tracker.start(5)
    with pytest.raises(ValueError):
        tracker.start(5)
    assert tracker.finish(5) == 6
    with pytest.raises(ValueError):
        tracker.finish(5)
    with pytest.raises(ValueError):
        tracker.finish(7)


class CommitsPastTheHighestFinished(OffsetTracker):
    """The high-water mark: one past the highest finished offset, whatever is still out below it."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.high = position

    def finish(self, offset: int) -> int:
        super().finish(offset)
        self.high = max(self.high, offset + 1)
        return self.committable

    @property
    def committable(self) -> int:
        return max(self.high, super().committable) if hasattr(self, "high") else super().committable


class WaitsForSkippedOffsets(OffsetTracker):
    """Counts offsets up one by one: an offset the bus skipped is waited for, for ever."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.done: set[int] = set()
        self.next = position

    def finish(self, offset: int) -> int:
        super().finish(offset)
        self.done.add(offset)
        while self.next in self.done:
            self.next += 1
        return self.committable

    @property
    def committable(self) -> int:
        return min(self.next, super().committable) if hasattr(self, "next") else super().committable


HUNT = dict(max_examples=300, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
            print_blob=False)


@pytest.mark.parametrize("broken", [CommitsPastTheHighestFinished, WaitsForSkippedOffsets], ids=lambda c: c.__name__)
def test_the_property_catches_a_broken_tracker(broken: type[OffsetTracker]) -> None:
    with pytest.raises(AssertionError):
        tracker_property(broken, **HUNT)()
