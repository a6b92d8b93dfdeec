"""Which offset of a partition may be committed when records finish out of order (pure: no I/O, no clock).

A PartitionConsumer hands records out in offset order (`start`) and learns of their
outcomes in any order (`finish`). The committable offset is the lowest offset still
out, or, with nothing out, the one after the last record handed out: everything below
it has finished, and nothing at or above an unfinished record is ever committable. It
only moves forward. Memory: one entry per record out (the consumer bounds how many).
"""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    def __init__(self, position: int) -> None:
        if position < 0:
            raise ValueError(f"an offset is not negative, got {position!r}")
        self.position = position  # the next offset to hand out (one after the last started)
        self._out: deque[int] = deque()  # offsets started, in order, down to the lowest unfinished one
        self._unfinished: set[int] = set()
        self._finished: set[int] = set()  # finished offsets above the lowest unfinished one

    def start(self, offset: int) -> None:
        """A record is handed out: offsets only grow (a bus may skip some: a gap is nothing to wait for)."""
        if offset < self.position:
            raise ValueError(f"offset {offset} started after {self.position - 1}: offsets are handed out in order")
        self._out.append(offset)
        self._unfinished.add(offset)
        self.position = offset + 1

    def finish(self, offset: int) -> int:
        """A record's outcome is recorded; returns the committable offset."""
        if offset not in self._unfinished:
            raise ValueError(f"offset {offset} is not out")
        self._unfinished.discard(offset)
        self._finished.add(offset)
        while self._out and self._out[0] in self._finished:
            self._finished.discard(self._out.popleft())
        return self.committable

    @property
    def committable(self) -> int:
        """Every record below it has finished; the one at it (if any) has not."""
        return self._out[0] if self._out else self.position

    @property
    def outstanding(self) -> int:
        """Records between the committable offset and the position (finished or not): what a commit now would leave."""
        return len(self._out)
