"""The Bus in memory: each partition a list of records from a base offset, one consumer group member per group.

Records become visible at once (no fsync to wait for). Records below the lowest offset every
group committed on a partition are dropped (retention), so a long simulation holds only what
is out: fetched and not committed, or not fetched yet.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from reactor.partitioner import kafka_partition
from reactor.ports import Assignment, BusRecord


@dataclass
class _Partition:
    topic: str
    number: int
    base: int = 0  # the offset of records[0]
    records: list[BusRecord] = field(default_factory=list)
    appended: trio.Event = field(default_factory=trio.Event)
    commits: dict[str, int] = field(default_factory=dict)  # group -> next offset

    @property
    def end(self) -> int:
        return self.base + len(self.records)


class MemoryBus:
    def __init__(self, topics: Mapping[str, int]) -> None:
        self.topics = dict(topics)
        self._parts = {(t, p): _Partition(t, p) for t, n in self.topics.items() for p in range(n)}
        self.produced = 0

    def partitions(self, topic: str) -> int:
        try:
            return self.topics[topic]
        except KeyError:
            raise ValueError(f"unknown topic {topic!r}; declared: {sorted(self.topics)}") from None

    def partition_for(self, topic: str, key: bytes) -> int:
        return kafka_partition(key, self.partitions(topic))

    async def produce(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
        result: list[tuple[int, int]] = []
        woken: list[_Partition] = []
        for topic, key, value in items:
            part = self._parts[(topic, kafka_partition(key, self.partitions(topic)))]
            offset = part.end
            part.records.append(BusRecord(topic, part.number, offset, key, value))
            result.append((part.number, offset))
            woken.append(part)
        for part in woken:
            if not part.appended.is_set():
                part.appended.set()
        self.produced += len(items)
        await trio.lowlevel.checkpoint()
        return result

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        part = self._parts[(topic, partition)]
        while True:
            if offset > part.end:
                raise ValueError(f"{topic}/{partition}: offset {offset} is beyond the end offset {part.end}")
            start = max(offset, part.base)
            if start < part.end:
                await trio.lowlevel.checkpoint()
                first = start - part.base
                return part.records[first : first + max_records]
            if part.appended.is_set():
                part.appended = trio.Event()
            await part.appended.wait()

    async def commit(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        part = self._parts[(topic, partition)]
        if next_offset > part.end:
            raise ValueError(f"{topic}/{partition}: commit {next_offset} is beyond the end offset {part.end}")
        part.commits[group] = next_offset
        low = min(part.commits.values())
        if low - part.base > 4096:  # drop what every group committed, in chunks (not a list shift per commit)
            del part.records[: low - part.base]
            part.base = low
        await trio.lowlevel.checkpoint()

    async def committed(self, group: str, topic: str, partition: int) -> int:
        await trio.lowlevel.checkpoint()
        return self._parts[(topic, partition)].commits.get(group, 0)

    async def end_offset(self, topic: str, partition: int) -> int:
        await trio.lowlevel.checkpoint()
        return self._parts[(topic, partition)].end

    async def assignments(self, group: str, topics: Sequence[str]) -> AsyncGenerator[Assignment, None]:
        """One member per group: every partition of `topics`, once; then nothing changes until the stream is closed."""
        owned = frozenset((t, p) for t in topics for p in range(self.partitions(t)))
        yield Assignment(owned, frozenset())
        await trio.sleep_forever()

    def held(self) -> int:
        """Records kept in memory (not yet committed by every group)."""
        return sum(len(p.records) for p in self._parts.values())
