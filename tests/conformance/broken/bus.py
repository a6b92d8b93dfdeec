"""Deliberately broken Buses: each wraps the embedded bus with one mistake a Bus backend could make."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from reactor.backends.embedded import EmbeddedBus
from reactor.ports import Assignment, BusRecord
from tests.conformance.backends import Factory, Place, embedded_bus


class Wrapper:
    """Passes every call to the embedded bus, but for those a variant overrides."""

    def __init__(self, inner: Any, nursery: trio.Nursery) -> None:
        self.inner = inner
        self.nursery = nursery  # runs as long as the handle is open; a crash cancels it

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ReordersAPartition(Wrapper):
    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        records = await self.inner.fetch(group, topic, partition, offset, max_records)
        return [records[1], records[0], *records[2:]] if len(records) > 1 else records


class PartitionsByCrc32(Wrapper):
    def partition_for(self, topic: str, key: bytes) -> int:
        return zlib.crc32(key) % self.inner.partitions(topic)


class FetchGivesMoreThanAsked(Wrapper):
    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        return await self.inner.fetch(group, topic, partition, offset, max_records + 2)


class FetchStartsOneEarly(Wrapper):
    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        return await self.inner.fetch(group, topic, partition, max(0, offset - 1), max_records)


class FetchReturnsNothingAtTheEnd(Wrapper):
    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        if offset >= await self.inner.end_offset(topic, partition):
            return []
        return await self.inner.fetch(group, topic, partition, offset, max_records)


class CommitsOnFetch(Wrapper):
    """Kafka's enable.auto.commit, where commit-after-processing was meant: a crash loses the batch in hand."""

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        records = await self.inner.fetch(group, topic, partition, offset, max_records)
        await self.inner.commit(group, topic, partition, records[-1].offset + 1)
        return records


class CommitsTheFetchPosition(Wrapper):
    """Commits how far the group has fetched, not the offset it was given (Kafka's `consumer.commit()` with no offsets
    where a consumer meant the finished prefix): a crash loses the records fetched past an unfinished one."""

    def __init__(self, inner: Any, nursery: trio.Nursery) -> None:
        super().__init__(inner, nursery)
        self.position: dict[tuple[str, str, int], int] = {}

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        records = await self.inner.fetch(group, topic, partition, offset, max_records)
        key = (group, topic, partition)
        self.position[key] = max(self.position.get(key, 0), records[-1].offset + 1 if records else offset)
        return records

    async def commit(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        await self.inner.commit(group, topic, partition, max(next_offset, self.position.get((group, topic, partition), 0)))


class GroupsShareOffsets(Wrapper):
    async def commit(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        await self.inner.commit("shared", topic, partition, next_offset)

    async def committed(self, group: str, topic: str, partition: int) -> int:
        return int(await self.inner.committed("shared", topic, partition))


class CommitsOnlyInMemory(Wrapper):
    def __init__(self, inner: Any, nursery: trio.Nursery) -> None:
        super().__init__(inner, nursery)
        self.offsets: dict[tuple[str, str, int], int] = {}

    async def commit(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        self.offsets[(group, topic, partition)] = next_offset

    async def committed(self, group: str, topic: str, partition: int) -> int:
        return self.offsets.get((group, topic, partition), 0)


class AcksBeforeItIsDurable(Wrapper):
    """Answers a produce at once and writes it a moment later: a crash in between loses acknowledged records."""

    def __init__(self, inner: Any, nursery: trio.Nursery) -> None:
        super().__init__(inner, nursery)
        self.next: dict[tuple[str, int], int] = {}

    async def produce(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
        acks = []
        for topic, key, _ in items:
            partition = self.inner.partition_for(topic, key)
            if (topic, partition) not in self.next:
                self.next[(topic, partition)] = await self.inner.end_offset(topic, partition)
            acks.append((partition, self.next[(topic, partition)]))
            self.next[(topic, partition)] += 1

        async def later() -> None:
            await trio.sleep(0.5)
            await self.inner.produce(items)

        self.nursery.start_soon(later)
        return acks

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        while offset > await self.inner.end_offset(topic, partition):  # acknowledged, not written yet
            await trio.sleep(0.01)
        return await self.inner.fetch(group, topic, partition, offset, max_records)


class AssignsOnlyTheFirstTopic(Wrapper):
    def assignments(self, group: str, topics: Sequence[str]) -> AsyncIterator[Assignment]:
        return self.inner.assignments(group, list(topics)[:1])


class RebalancesALoneMember(Wrapper):
    def assignments(self, group: str, topics: Sequence[str]) -> AsyncIterator[Assignment]:
        return self._changes(self.inner.assignments(group, topics))

    async def _changes(self, inner: AsyncIterator[Assignment]) -> AsyncIterator[Assignment]:
        first = await inner.__anext__()
        yield first
        await trio.sleep(0.05)
        yield Assignment(assigned=frozenset(), revoked=first.assigned)
        yield first
        await trio.sleep_forever()


class EveryMemberGetsEveryPartition(Wrapper):
    """The embedded bus before groups had members: each stream of a group got all the partitions."""

    def assignments(self, group: str, topics: Sequence[str]) -> AsyncIterator[Assignment]:
        return self._all(frozenset((t, n) for t in topics for n in range(self.inner.partitions(t))))

    async def _all(self, everything: frozenset[tuple[str, int]]) -> AsyncIterator[Assignment]:
        yield Assignment(assigned=everything, revoked=frozenset())
        await trio.sleep_forever()


class HandsOverBeforeTheRevocationIsHandled(EmbeddedBus):
    """Gives a partition to its new member as soon as the old one is told to let go: both process it for a while."""

    def _held_by_others(self, members: list[Any], member: Any) -> set[tuple[str, int]]:
        return {p for m in members if m is not member for p in m.owned}

    def _change(self, members: list[Any], member: Any) -> Assignment | None:
        change = super()._change(members, member)
        if change is not None and change.revoked:
            self._wake(members)  # the others may take what it was just told to let go
        return change


def _wrapped(kind: Callable[[Any, trio.Nursery], Wrapper]) -> Factory[Any]:
    inner = embedded_bus()

    @asynccontextmanager
    async def open_(place: Place) -> AsyncIterator[Wrapper]:
        async with inner.open(place) as bus, trio.open_nursery() as nursery:
            yield kind(bus, nursery)

    return Factory(open_, clock=inner.clock)


VARIANTS: dict[str, Factory[Any]] = {
    kind.__name__: _wrapped(kind)
    for kind in (
        ReordersAPartition, PartitionsByCrc32, FetchGivesMoreThanAsked, FetchStartsOneEarly, FetchReturnsNothingAtTheEnd,
        CommitsOnFetch, CommitsTheFetchPosition, GroupsShareOffsets, CommitsOnlyInMemory, AcksBeforeItIsDurable, AssignsOnlyTheFirstTopic,
        RebalancesALoneMember, EveryMemberGetsEveryPartition,
    )
}
VARIANTS["HandsOverBeforeTheRevocationIsHandled"] = embedded_bus(HandsOverBeforeTheRevocationIsHandled)

# The checks each variant was written against (tests/conformance/test_catches_broken.py: each must catch it).
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "CommitsTheFetchPosition": ("a_member_fetching_ahead_of_its_commit_restarts_at_the_commit",),
}
