"""The Bus port's conformance checks (reactor/ports.py, Bus): Kafka's semantics, which the embedded bus keeps.

What the actors rely on: a produce returns once its records are durable (Ingress answers
202 on it); a key always lands on the partition Kafka's default partitioner picks; a
partition is read in the order it was written, from any offset, never more than asked
for (the consumer's maybe-sent window, actors/consumer.py, counts on it); a group's
committed offset is where a member starts, so records processed but not committed come
again after a crash; groups are apart; each partition of a group has one member at a
time. Nothing may rest on `end_offset` (advisory: the Kafka-protocol broker used in tests
reports wrong ones after batched produces), so no check reads it.

The place declares the topics "t" (4 partitions) and "u" (1). A crash is a handle
cancelled rather than closed (`crashing`), then opened again.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import trio

from reactor.partitioner import kafka_partition
from reactor.ports import Assignment, BusRecord
from tests.conformance.backends import Harness, crashing

KEYS = [b"", b"u", b"user-1", b"user-2", b"\x00\xff", "ünïcode".encode(), b"a-little-bit-long-string", b"x" * 300]


async def read(bus: Any, group: str, topic: str, partition: int, offset: int, count: int) -> list[BusRecord]:
    """`count` records of a partition from `offset` on, fetched as they come (fails rather than waits forever)."""
    out: list[BusRecord] = []
    with trio.move_on_after(10):
        while len(out) < count:
            batch = await bus.fetch(group, topic, partition, offset, count - len(out))
            assert batch, "fetch returned no record (it waits for one)"
            out += batch
            offset = batch[-1].offset + 1
        return out
    raise AssertionError(f"{topic}/{partition}: {len(out)} of {count} records came")


async def produce_each(bus: Any, items: list[tuple[str, bytes, bytes]]) -> dict[tuple[str, int, int], tuple[bytes, bytes]]:
    """Produce in one call; {(topic, partition, offset): (key, value)} of what was acknowledged."""
    acks = await bus.produce(items)
    assert len(acks) == len(items)
    return {(topic, partition, offset): (key, value) for (topic, key, value), (partition, offset) in zip(items, acks)}


async def check_a_key_lands_where_kafkas_partitioner_puts_it(h: Harness[Any]) -> None:
    async with h.open() as bus:
        assert (bus.partitions("t"), bus.partitions("u")) == (4, 1)
        for key in KEYS:
            assert bus.partition_for("t", key) == kafka_partition(key, 4), key
            assert bus.partition_for("u", key) == 0
        acked = await produce_each(bus, [("t", key, b"v") for key in KEYS] + [("u", key, b"v") for key in KEYS])
        for (topic, partition, _), (key, _) in acked.items():
            assert partition == kafka_partition(key, bus.partitions(topic)), (topic, key, partition)


async def check_a_partition_is_read_in_the_order_it_was_written(h: Harness[Any]) -> None:
    keys = [b"user-%d" % i for i in range(7)]
    async with h.open() as bus:
        acked: dict[tuple[str, int, int], tuple[bytes, bytes]] = {}
        acked |= await produce_each(bus, [("t", keys[i % 7], b"%d" % i) for i in range(30)])  # one call, many partitions

        async def producer(key: bytes) -> None:  # each key's records one after another, all keys at once
            for j in range(5):
                acked.update(await produce_each(bus, [("t", key, key + b"/%d" % j)]))

        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(producer, key)
        for partition in range(4):
            mine = sorted((offset, kv) for (_, p, offset), kv in acked.items() if p == partition)
            records = await read(bus, h.name("reader"), "t", partition, 0, len(mine))
            assert [(r.topic, r.partition) for r in records] == [("t", partition)] * len(mine)
            assert [(r.offset, (r.key, r.value)) for r in records] == mine, f"partition {partition} reads in another order"
        for key in keys:  # each key's records in the order they were produced
            values = [value for (_, _, offset), (k, value) in sorted(acked.items()) if k == key]
            assert [v for v in values if b"/" in v] == [key + b"/%d" % j for j in range(5)], key


async def check_fetch_starts_at_the_offset_and_gives_at_most_what_was_asked(h: Harness[Any]) -> None:
    async with h.open() as bus:
        acks = await bus.produce([("u", b"k", b"%d" % i) for i in range(10)])
        offsets = [offset for _, offset in acks]
        assert offsets == sorted(offsets) and len(set(offsets)) == 10
        first = await bus.fetch(h.name("g"), "u", 0, offsets[0], 100)
        assert first and first[0].offset == offsets[0], "a fresh partition's first record is where it starts"
        records = await bus.fetch(h.name("g"), "u", 0, offsets[3], 4)
        assert 1 <= len(records) <= 4, f"{len(records)} records for max_records=4"
        assert [(r.offset, r.value) for r in records] == [(offsets[3 + i], b"%d" % (3 + i)) for i in range(len(records))]
        [one] = await bus.fetch(h.name("g"), "u", 0, offsets[9], 1)
        assert (one.offset, one.key, one.value) == (offsets[9], b"k", b"9")


async def check_fetch_waits_for_a_record(h: Harness[Any]) -> None:
    got: list[BusRecord] = []
    async with h.open() as bus:
        [(_, last)] = await bus.produce([("u", b"k", b"before")])

        async def consumer() -> None:
            got.extend(await bus.fetch(h.name("g"), "u", 0, last + 1, 10))

        with trio.move_on_after(30) as guard:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer)
                await trio.sleep(0.05)
                assert got == [], "fetch at the end returned before anything was produced"
                [(_, offset)] = await bus.produce([("u", b"k", b"after")])
        assert not guard.cancelled_caught, "a waiting fetch did not see the record produced after it"
        assert [(r.offset, r.value) for r in got] == [(offset, b"after")]


async def check_committed_offsets_are_per_group_and_partition(h: Harness[Any]) -> None:
    group, other = h.name("g"), h.name("other")
    async with h.open() as bus:
        acked = await produce_each(bus, [("t", b"user-%d" % i, b"v") for i in range(40)])
        ends = {p: max(o for (_, q, o) in acked if q == p) + 1 for p in range(4)}
        assert [await bus.committed(group, "t", p) for p in range(4)] == [0, 0, 0, 0]
        await bus.commit(group, "t", 1, ends[1])
        await bus.commit(group, "t", 2, ends[2] - 1)
        assert [await bus.committed(group, "t", p) for p in range(4)] == [0, ends[1], ends[2] - 1, 0]
        assert [await bus.committed(other, "t", p) for p in range(4)] == [0, 0, 0, 0]
        await bus.commit(group, "t", 2, ends[2])  # forward again
        assert await bus.committed(group, "t", 2) == ends[2]
        assert await bus.committed(group, "u", 0) == 0


async def check_two_groups_each_read_everything(h: Harness[Any]) -> None:
    first, second = h.name("first"), h.name("second")
    async with h.open() as bus:
        acks = await bus.produce([("u", b"k", b"%d" % i) for i in range(10)])
        end = acks[-1][1] + 1
        assert [r.value for r in await read(bus, first, "u", 0, 0, 10)] == [b"%d" % i for i in range(10)]
        await bus.commit(first, "u", 0, end)
        assert await bus.committed(second, "u", 0) == 0
        assert [r.value for r in await read(bus, second, "u", 0, 0, 10)] == [b"%d" % i for i in range(10)]
        await bus.commit(second, "u", 0, acks[3][1])
        assert (await bus.committed(first, "u", 0), await bus.committed(second, "u", 0)) == (end, acks[3][1])


async def check_records_processed_but_not_committed_come_again_after_a_crash(h: Harness[Any]) -> None:
    group = h.name("g")
    async with crashing(h.open()) as bus:
        acks = await bus.produce([("u", b"k", b"%d" % i) for i in range(8)])
        before = await bus.committed(group, "u", 0)
        taken = await read(bus, group, "u", 0, before, 5)  # a member takes a batch, processes it, and dies before its commit
        assert [r.value for r in taken] == [b"%d" % i for i in range(5)]
    async with h.open() as bus:
        start = await bus.committed(group, "u", 0)
        assert start == before, f"the committed offset moved from {before} to {start} without a commit"
        again = await read(bus, group, "u", 0, start, 5)
        assert [(r.offset, r.value) for r in again] == [(r.offset, r.value) for r in taken], "the uncommitted batch did not come again"
        await bus.commit(group, "u", 0, again[-1].offset + 1)
    async with crashing(h.open()) as bus:
        start = await bus.committed(group, "u", 0)
        assert start == acks[5][1], "a commit was lost"
        rest = await read(bus, group, "u", 0, start, 3)
        assert [r.value for r in rest] == [b"5", b"6", b"7"]


async def check_a_member_fetching_ahead_of_its_commit_restarts_at_the_commit(h: Harness[Any]) -> None:
    """The consumer fetches while earlier records are out and commits the finished prefix (actors/consumer.py): several
    fetches ahead of the commit, then a commit below the fetch position, must leave exactly that commit; a member that
    starts after a crash reads again from it, also the records fetched past it."""
    group = h.name("g")
    async with crashing(h.open()) as bus:
        acks = await bus.produce([("u", b"k", b"%d" % i) for i in range(10)])
        start = await bus.committed(group, "u", 0)
        first = await read(bus, group, "u", 0, start, 3)
        second = await read(bus, group, "u", 0, first[-1].offset + 1, 3)  # fetched ahead: the first three are still out
        assert [r.value for r in first + second] == [b"%d" % i for i in range(6)]
        assert await bus.committed(group, "u", 0) == start, "fetching moved the committed offset"
        await bus.commit(group, "u", 0, acks[2][1])  # the finished prefix: 0 and 1 (2 is still out)
        assert await bus.committed(group, "u", 0) == acks[2][1], "the commit is not the offset committed"
    async with h.open() as bus:
        restart = await bus.committed(group, "u", 0)
        assert restart == acks[2][1], f"a member starts at {restart}, not at the commit {acks[2][1]} (records out past it are lost)"
        again = await read(bus, group, "u", 0, restart, 8)
        assert [r.value for r in again] == [b"%d" % i for i in range(2, 10)]


async def check_a_produce_is_durable_when_it_returns(h: Harness[Any]) -> None:
    acked: dict[tuple[str, int, int], bytes] = {}
    group = h.name("g")
    async with crashing(h.open()) as bus:

        async def producer(i: int) -> None:
            for j in range(5):
                for partition, offset in await bus.produce([("t", b"user-%d" % i, b"%d-%d" % (i, j))]):
                    acked[("t", partition, offset)] = b"%d-%d" % (i, j)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(producer, i)
        committed = kafka_partition(b"user-0", 4)
        await bus.commit(group, "t", committed, 1)
    async with h.open() as bus:
        assert await bus.committed(group, "t", committed) == 1
        for partition in range(4):
            mine = sorted((offset, value) for (_, p, offset), value in acked.items() if p == partition)
            if not mine:
                continue
            records = await read(bus, h.name("reader"), "t", partition, mine[0][0], mine[-1][0] - mine[0][0] + 1)
            found = {r.offset: r.value for r in records}
            assert all(found.get(offset) == value for offset, value in mine), f"partition {partition} lost acknowledged records"


async def check_a_lone_member_is_assigned_every_partition_once(h: Harness[Any]) -> None:
    group = h.name("g")
    everything = frozenset({("t", 0), ("t", 1), ("t", 2), ("t", 3), ("u", 0)})
    async with h.open() as bus:
        for _ in range(2):  # a member joins, leaves; the next one gets it all again
            async with aclosing(bus.assignments(group, ["t", "u"])) as changes:
                first = None
                with trio.move_on_after(30):
                    first = await changes.__anext__()
                assert first == Assignment(assigned=everything, revoked=frozenset()), first
                with trio.move_on_after(0.2) as quiet:
                    change = await changes.__anext__()
                    raise AssertionError(f"a lone member's partitions changed: {change}")
                assert quiet.cancelled_caught
        async with aclosing(bus.assignments(h.name("other"), ["u"])) as changes:  # another group: its own partitions
            assert await changes.__anext__() == Assignment(assigned=frozenset({("u", 0)}), revoked=frozenset())


async def check_members_of_a_group_share_its_partitions_one_owner_at_a_time(h: Harness[Any]) -> None:
    """A second member gets a share only once the first has handled its revocation (committed, stopped: here,
    asked for its next change); when it leaves, the first gets everything back. No partition has two owners."""
    group = h.name("g")
    everything = frozenset({("t", 0), ("t", 1), ("t", 2), ("t", 3), ("u", 0)})
    owned: dict[str, set[tuple[str, int]]] = {"a": set(), "b": set()}
    overlaps: list[str] = []

    async def member(bus: Any, name: str, scope: trio.CancelScope) -> None:
        with scope:
            try:
                async with aclosing(bus.assignments(group, ["t", "u"])) as changes:
                    async for change in changes:
                        other = owned["b" if name == "a" else "a"]
                        if change.assigned & other:
                            overlaps.append(f"{name} was assigned {sorted(change.assigned & other)}, still owned by the other")
                        owned[name] |= change.assigned
                        if change.revoked:
                            await trio.sleep(0.05)  # finishing the batch in hand and committing it
                            owned[name] -= change.revoked
            finally:
                owned[name] = set()  # left the group

    async def until(what: str, done: Any) -> None:
        with trio.move_on_after(30):
            while not done():
                assert not overlaps, overlaps
                await trio.sleep(0.01)
            return
        raise AssertionError(f"never {what}: {owned}")

    async with h.open() as bus, trio.open_nursery() as nursery:
        first, second = trio.CancelScope(), trio.CancelScope()
        nursery.start_soon(member, bus, "a", first)
        await until("assigned everything to the first member", lambda: owned["a"] == everything)
        nursery.start_soon(member, bus, "b", second)
        await until("shared between two members",
                    lambda: owned["a"] and owned["b"] and owned["a"] | owned["b"] == everything and not owned["a"] & owned["b"])
        second.cancel()  # the second member leaves
        await until("gave the first member everything back", lambda: owned["a"] == everything)
        first.cancel()
    assert not overlaps, overlaps
