"""The embedded bus: durability across kill -9, recovery of torn files, group commit, retention, its errors.

The Bus port's semantics (Kafka's partitioner, order per partition, fetch, per-group
commits, redelivery after a crash, assignment) are checked on every bus by its
conformance suite, tests/conformance/suites/bus.py.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import pytest
import trio
import trio.testing

import reactor.backends.embedded.segment_log as segment_log
from reactor.backends.embedded.bus import EmbeddedBus
from reactor.backends.embedded.bus_errors import BusClosed, BusError, BusNotRunning, UnknownTopic
from reactor.partitioner import kafka_partition
from reactor.ports import BusRecord

pytestmark = pytest.mark.trio

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def running(bus: EmbeddedBus, *, crash: bool = False) -> AsyncIterator[EmbeddedBus]:
    """Run the bus for the block; then stop it cleanly, or cancel it abruptly (`crash`)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        yield bus
        if crash:
            nursery.cancel_scope.cancel()
        else:
            bus.stop()


def segment_files(directory: Path, topic: str, partition: int) -> list[Path]:
    return sorted((directory / "logs" / f"{topic}-{partition}").glob("*.log"))


async def fetch_all(bus: EmbeddedBus, topic: str, partition: int, start: int = 0) -> list[BusRecord]:
    end = await bus.end_offset(topic, partition)
    out: list[BusRecord] = []
    offset = start
    while offset < end:
        batch = await bus.fetch("reader", topic, partition, offset, 1000)
        out += batch
        offset = batch[-1].offset + 1
    return out


async def test_round_trip_ordering_and_dense_offsets(tmp_path: Path) -> None:
    async with running(EmbeddedBus(tmp_path, {"orders": 4})) as bus:
        items = [("orders", f"user-{i % 7}".encode(), f"value-{i}".encode()) for i in range(60)]
        acks = await bus.produce(items)
        acks += await bus.produce(items[:10])
        items += items[:10]
        assert len(acks) == len(items)
        expected: dict[int, list[tuple[int, bytes, bytes]]] = {}
        for (_, key, value), (partition, offset) in zip(items, acks):
            assert partition == kafka_partition(key, 4) == bus.partition_for("orders", key)
            expected.setdefault(partition, []).append((offset, key, value))
        for partition in range(4):
            rows = expected.get(partition, [])
            assert [offset for offset, _, _ in rows] == list(range(len(rows)))  # dense, from 0, in order
            records = await fetch_all(bus, "orders", partition)
            assert [(r.offset, r.key, r.value) for r in records] == rows
            assert all(r.topic == "orders" and r.partition == partition for r in records)
            assert await bus.end_offset("orders", partition) == len(rows)
        stats = bus.statistics()
        assert stats.records_produced == 70
        assert sum(stats.end_offsets.values()) == 70


async def test_fetch_respects_max_records_and_offset_bounds(tmp_path: Path) -> None:
    async with running(EmbeddedBus(tmp_path, {"t": 1})) as bus:
        await bus.produce([("t", b"k", str(i).encode()) for i in range(10)])
        records = await bus.fetch("g", "t", 0, 3, 4)
        assert [r.offset for r in records] == [3, 4, 5, 6]
        with pytest.raises(ValueError):
            await bus.fetch("g", "t", 0, 11, 1)  # beyond the end
        with pytest.raises(ValueError):
            await bus.fetch("g", "t", 0, 0, 0)
        with pytest.raises(ValueError):
            await bus.fetch("g", "t", 1, 0, 1)  # no such partition


async def test_use_before_run_after_stop_and_unknown_topic(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path, {"t": 2})
    with pytest.raises(BusNotRunning, match="nursery.start"):
        await bus.produce([("t", b"k", b"v")])
    with pytest.raises(BusNotRunning):
        await bus.fetch("g", "t", 0, 0, 1)
    async with running(bus):
        with pytest.raises(UnknownTopic, match="nope"):
            await bus.produce([("t", b"k", b"v"), ("nope", b"k", b"v")])
        with pytest.raises(KeyError):
            bus.partitions("nope")
        with pytest.raises(ValueError):
            bus.partition_for("nope", b"k")
        assert await bus.end_offset("t", 0) + await bus.end_offset("t", 1) == 0  # nothing half-produced
    with pytest.raises(BusClosed):
        await bus.produce([("t", b"k", b"v")])
    with pytest.raises(ValueError):
        EmbeddedBus(tmp_path, {"bad/name": 1})
    with pytest.raises(ValueError):
        EmbeddedBus(tmp_path, {"t": 0})


async def test_stop_wakes_waiting_fetchers(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path, {"t": 1})
    with trio.fail_after(5):
        async with running(bus):
            async with trio.open_nursery() as nursery:

                async def consumer() -> None:
                    with pytest.raises(BusClosed):
                        await bus.fetch("g", "t", 0, 0, 10)

                nursery.start_soon(consumer)
                await trio.testing.wait_all_tasks_blocked()
                bus.stop()


async def test_group_commit_batches_concurrent_producers(tmp_path: Path) -> None:
    async with running(EmbeddedBus(tmp_path, {"t": 1})) as bus:
        acks: list[tuple[int, int]] = []

        async def producer(i: int) -> None:
            for j in range(4):
                acks.extend(await bus.produce([("t", f"{i}".encode(), f"{i}-{j}".encode())]))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(producer, i)
        stats = bus.statistics()
        assert sorted(offset for _, offset in acks) == list(range(200))
        assert stats.records_produced == 200
        assert stats.fsyncs < 200 / 5  # ~50 records share each fsync
        assert stats.batches_flushed < 200 / 5
        assert stats.mean_batch_size > 5
        assert len(await fetch_all(bus, "t", 0)) == 200


async def test_flush_interval_lingers_to_batch_more(tmp_path: Path) -> None:
    async with running(EmbeddedBus(tmp_path, {"t": 1}, flush_interval_s=0.2)) as bus:

        async def producer(i: int) -> None:
            await trio.sleep(0.005 * i)
            await bus.produce([("t", b"k", b"%d" % i)])

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(producer, i)
        assert bus.statistics().batches_flushed == 1


async def test_crash_without_stop_keeps_acknowledged_records_and_commits(tmp_path: Path) -> None:
    acked: dict[tuple[int, int], bytes] = {}
    bus = EmbeddedBus(tmp_path, {"t": 3})
    async with running(bus, crash=True):
        for round_ in range(3):
            acks = await bus.produce([("t", f"k{i}".encode(), f"{round_}-{i}".encode()) for i in range(20)])
            for (partition, offset), i in zip(acks, range(20)):
                acked[(partition, offset)] = f"{round_}-{i}".encode()
        await bus.commit("g", "t", 0, 5)
        await bus.commit("g", "t", 1, await bus.end_offset("t", 1))
        # Producers caught in flight by the crash must not hang, nor be acknowledged.
        async with trio.open_nursery() as nursery:

            async def late(i: int) -> None:
                for partition, offset in await bus.produce([("t", b"late%d" % i, b"late")]):
                    acked[(partition, offset)] = b"late"

            for i in range(5):
                nursery.start_soon(late, i)
            await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    ends = {p: max(o for (q, o) in acked if q == p) + 1 for p in range(3)}

    reopened = EmbeddedBus(tmp_path, {"t": 3})
    async with running(reopened):
        for partition in range(3):
            assert await reopened.end_offset("t", partition) >= ends[partition]
            records = {r.offset: r.value for r in await fetch_all(reopened, "t", partition)}
            for (p, offset), value in acked.items():
                if p == partition:
                    assert records[offset] == value
        assert await reopened.committed("g", "t", 0) == 5
        assert await reopened.committed("g", "t", 1) == ends[1]
        assert await reopened.committed("g", "t", 2) == 0
        # New records continue the dense offsets.
        [(partition, offset)] = await reopened.produce([("t", b"k0", b"after")])
        assert offset == await reopened.end_offset("t", partition) - 1
        assert (await reopened.fetch("g", "t", partition, offset, 1))[0].value == b"after"


KILL9_CHILD = textwrap.dedent(
    """
    import sys, pathlib
    sys.path.insert(0, sys.argv[2])
    import trio
    from reactor.backends.embedded import EmbeddedBus

    async def main():
        bus = EmbeddedBus(pathlib.Path(sys.argv[1]), {"t": 3}, segment_bytes=4096)
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)

            async def producer(w):
                for i in range(1_000_000):
                    value = f"{w}-{i}".encode()
                    [(p, o)] = await bus.produce([("t", value, value * 5)])
                    print("P", p, o, value.decode(), flush=True)

            async def committer():  # partition 2 gets no commit: retention keeps all of it
                while True:
                    for p in range(2):
                        end = await bus.end_offset("t", p)
                        await bus.commit("g", "t", p, end)
                        print("C", p, end, flush=True)
                    await trio.sleep(0.001)

            for w in range(8):
                nursery.start_soon(producer, w)
            nursery.start_soon(committer)

    trio.run(main)
    """
)


async def test_kill_9_loses_no_acknowledged_record(tmp_path: Path) -> None:
    directory = tmp_path / "bus"
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-c", KILL9_CHILD, str(directory), str(ROOT)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        buffer = b""
        try:
            while sum(line.startswith(b"P ") for line in buffer.split(b"\n")[:-1]) < 400:
                chunk = await proc.stdout.receive_some(65536)
                assert chunk, f"child exited early with {proc.poll()}"
                buffer += chunk
            proc.send_signal(signal.SIGKILL)  # mid-stream: producers and commits in flight
        finally:
            if proc.poll() is None:
                proc.kill()
            await proc.wait()
        while chunk := await proc.stdout.receive_some(65536):
            buffer += chunk  # lines the child wrote before it died were acknowledged too
    assert proc.returncode == -signal.SIGKILL
    produced: dict[tuple[int, int], bytes] = {}
    committed = {0: 0, 1: 0, 2: 0}
    for line in buffer.split(b"\n")[:-1]:  # the last piece may be a torn line
        kind, *fields = line.split()
        if kind == b"P":
            produced[(int(fields[0]), int(fields[1]))] = fields[2] * 5
        else:
            committed[int(fields[0])] = max(committed[int(fields[0])], int(fields[1]))
    assert len(produced) >= 400

    bus = EmbeddedBus(directory, {"t": 3}, segment_bytes=4096)
    async with running(bus):
        for partition in range(3):
            floor = await bus.committed("g", "t", partition)
            assert floor >= committed[partition]  # every acknowledged commit survived
            assert floor <= await bus.end_offset("t", partition)
            # Retention deletes only segments below the group's durable commit.
            start = (await bus.fetch("x", "t", partition, 0, 1))[0].offset
            assert start <= floor
            if partition == 2:
                assert start == 0
            records = {r.offset: r.value for r in await fetch_all(bus, "t", partition, start)}
            for (p, offset), value in produced.items():
                if p == partition and offset >= start:
                    assert records[offset] == value
        # Still writable at the right offsets.
        [(partition, offset)] = await bus.produce([("t", b"0-0", b"again")])
        assert offset == await bus.end_offset("t", partition) - 1


@pytest.mark.parametrize("damage", ["truncate-mid-record", "garbage", "flipped-byte", "plausible-header"])
async def test_torn_tail_is_truncated_at_first_bad_record(tmp_path: Path, damage: str) -> None:
    async with running(EmbeddedBus(tmp_path, {"t": 1})) as bus:
        await bus.produce([("t", b"k", b"value-%d" % i) for i in range(10)])
    [segment] = segment_files(tmp_path, "t", 0)
    data = segment.read_bytes()
    last_record = len(b"value-9") + 1 + 20
    if damage == "truncate-mid-record":
        segment.write_bytes(data[: -last_record // 2])
        survivors = 9
    elif damage == "garbage":
        segment.write_bytes(data + os.urandom(5) + b"\x00" * 40)
        survivors = 10
    elif damage == "flipped-byte":
        segment.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        survivors = 9
    else:  # the next offset (10) and a consistent length, but a wrong CRC
        fake = struct.pack("<IIQI", 0xDEADBEEF, 12 + len(b"k") + len(b"value-X"), 10, 1) + b"k" + b"value-X"
        segment.write_bytes(data + fake)
        survivors = 10

    async with running(EmbeddedBus(tmp_path, {"t": 1})) as bus:
        assert await bus.end_offset("t", 0) == survivors
        records = await fetch_all(bus, "t", 0)
        assert [r.value for r in records] == [b"value-%d" % i for i in range(survivors)]
        acks = await bus.produce([("t", b"k", b"new-a"), ("t", b"k", b"new-b")])
        assert acks == [(0, survivors), (0, survivors + 1)]
    assert segment.stat().st_size == len(data) - (10 - survivors) * last_record + 2 * (len(b"new-a") + 21)

    async with running(EmbeddedBus(tmp_path, {"t": 1})) as bus:
        values = [r.value for r in await fetch_all(bus, "t", 0)]
        assert values == [b"value-%d" % i for i in range(survivors)] + [b"new-a", b"new-b"]


async def test_commit_semantics_and_persistence(tmp_path: Path) -> None:
    async with running(EmbeddedBus(tmp_path, {"t": 2, "u": 1})) as bus:
        await bus.produce([("t", b"k", b"v")] * 10)
        partition = bus.partition_for("t", b"k")
        assert await bus.committed("g", "t", partition) == 0  # never committed
        await bus.commit("g", "t", partition, 7)
        await bus.commit("h", "t", partition, 10)
        await bus.commit("g", "t", partition, 3)  # backwards: an offset reset, allowed
        assert await bus.committed("g", "t", partition) == 3
        with pytest.raises(ValueError):
            await bus.commit("g", "t", partition, 11)  # beyond the end
        with pytest.raises(ValueError):
            await bus.commit("g", "t", partition, -1)
        with pytest.raises(UnknownTopic):
            await bus.commit("g", "nope", 0, 0)
        # Concurrent commits share fsyncs.
        before = bus.statistics()
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(bus.commit, f"group-{i}", "t", partition, i % 11)
        after = bus.statistics()
        assert after.commits - before.commits == 40
        assert after.commit_batches - before.commit_batches < 10
    async with running(EmbeddedBus(tmp_path, {"t": 2, "u": 1})) as bus:
        assert await bus.committed("g", "t", partition) == 3
        assert await bus.committed("h", "t", partition) == 10
        assert await bus.committed("group-13", "t", partition) == 2
        assert await bus.committed("g", "t", 1 - partition) == 0
        assert await bus.committed("g", "u", 0) == 0


async def test_offsets_log_compaction_and_torn_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_log, "COMPACT_MIN_ENTRIES", 20)
    async with running(EmbeddedBus(tmp_path, {"t": 1})) as bus:
        await bus.produce([("t", b"k", b"v")] * 100)
        for i in range(1, 51):
            await bus.commit("g", "t", 0, i)
            await bus.commit("h", "t", 0, i // 2)
    offsets_log = tmp_path / "offsets.log"
    assert offsets_log.stat().st_size < 25 * 26  # compacted: not 100 entries of 26 bytes
    assert not (tmp_path / "offsets.log.tmp").exists()
    offsets_log.write_bytes(offsets_log.read_bytes() + b"\x07torn entry")
    async with running(EmbeddedBus(tmp_path, {"t": 1})) as bus:
        assert await bus.committed("g", "t", 0) == 50
        assert await bus.committed("h", "t", 0) == 25
        await bus.commit("g", "t", 0, 49)
    async with running(EmbeddedBus(tmp_path, {"t": 1})) as bus:
        assert await bus.committed("g", "t", 0) == 49


async def test_retention_deletes_committed_segments_and_old_offsets_read_from_disk(tmp_path: Path) -> None:
    # 20-byte header + 1-byte key + 180-byte value = 201 bytes: 5 records per 1000-byte segment.
    value = lambda i: b"%03d" % i + b"x" * 177  # noqa: E731
    async with running(EmbeddedBus(tmp_path, {"t": 1, "u": 1}, segment_bytes=1000)) as bus:
        await bus.produce([("t", b"k", value(i)) for i in range(40)])
        await bus.produce([("u", b"k", value(i)) for i in range(40)])
        assert [int(p.stem) for p in segment_files(tmp_path, "t", 0)] == [0, 5, 10, 15, 20, 25, 30, 35]
        await bus.commit("b", "t", 0, 23)
        assert [int(p.stem) for p in segment_files(tmp_path, "t", 0)] == [20, 25, 30, 35]
        await bus.commit("a", "t", 0, 31)  # the slowest group ("b") holds retention back
        assert [int(p.stem) for p in segment_files(tmp_path, "t", 0)] == [20, 25, 30, 35]
        assert len(segment_files(tmp_path, "u", 0)) == 8  # nobody committed: keep everything
        assert bus.statistics().segments_deleted == 4

        reads = bus.statistics().disk_reads
        # A new group at 0 starts at the log start; those records are below every commit,
        # so no longer in memory: they come from the segment files.
        records = await bus.fetch("new", "t", 0, 0, 10)
        assert [r.offset for r in records] == [20, 21, 22]
        assert [r.value for r in records] == [value(i) for i in (20, 21, 22)]
        assert (await bus.fetch("new", "t", 0, 21, 1))[0].value == value(21)
        assert bus.statistics().disk_reads == reads + 2
        memory = await bus.fetch("a", "t", 0, 31, 100)  # at/after the floor: from memory
        assert [r.offset for r in memory] == list(range(31, 40))
        assert bus.statistics().disk_reads == reads + 2
        # Everything retained reads back, whether from memory or disk.
        assert [r.value for r in await fetch_all(bus, "t", 0, 20)] == [value(i) for i in range(20, 40)]

    async with running(EmbeddedBus(tmp_path, {"t": 1, "u": 1}, segment_bytes=1000)) as bus:
        # After a restart nothing is cached: sealed segments are indexed on first read.
        records = await bus.fetch("c", "t", 0, 26, 8)
        assert [r.offset for r in records] == list(range(26, 34))  # across a segment boundary
        assert [r.value for r in records] == [value(i) for i in range(26, 34)]
        assert [r.value for r in await fetch_all(bus, "u", 0)] == [value(i) for i in range(40)]
        await bus.commit("b", "t", 0, 40)
        assert [int(p.stem) for p in segment_files(tmp_path, "t", 0)] == [30, 35]
        await bus.commit("a", "t", 0, 40)
        await bus.commit("b", "t", 0, 40)
        assert [int(p.stem) for p in segment_files(tmp_path, "t", 0)] == [35]  # the last one stays
        [(_, offset)] = await bus.produce([("t", b"k", value(40))])
        assert offset == 40
        assert (await bus.fetch("new", "t", 0, 0, 10))[0].offset == 35


async def test_disk_reads_land_on_any_offset_through_the_sparse_index(tmp_path: Path) -> None:
    # ~210-byte records, 16 KiB segments: ~78 records and ~4 index entries per segment.
    value = lambda i: b"%05d" % i + bytes([i % 251]) * 180  # noqa: E731
    probes = [0, 1, 19, 20, 21, 77, 78, 79, 150, 233, 234, 398, 399]

    async def check(bus: EmbeddedBus) -> None:
        for offset in probes:
            records = await bus.fetch("g", "t", 0, offset, 3)
            assert [r.offset for r in records] == list(range(offset, min(offset + 3, 400)))
            assert [r.value for r in records] == [value(i) for i in range(offset, min(offset + 3, 400))]

    # cache_bytes=0: nothing stays in memory, every fetch goes to the segment files.
    async with running(EmbeddedBus(tmp_path, {"t": 1}, segment_bytes=16384, cache_bytes=0)) as bus:
        for start in range(0, 400, 50):
            await bus.produce([("t", b"k", value(i)) for i in range(start, start + 50)])
        assert len(segment_files(tmp_path, "t", 0)) > 3
        await check(bus)  # indexes built by the writer
        assert bus.statistics().disk_reads == len(probes)
    async with running(EmbeddedBus(tmp_path, {"t": 1}, segment_bytes=16384, cache_bytes=0)) as bus:
        await check(bus)  # sealed segments indexed lazily, the last one by recovery


async def test_memory_cache_is_bounded(tmp_path: Path) -> None:
    async with running(EmbeddedBus(tmp_path, {"t": 1}, cache_bytes=2000)) as bus:
        for _ in range(5):
            await bus.produce([("t", b"k", b"v" * 180)] * 20)
        assert bus.statistics().cached_records <= 10
        assert len(await fetch_all(bus, "t", 0)) == 100  # the rest comes from disk
        await bus.commit("g", "t", 0, 100)
        assert bus.statistics().cached_records == 0


async def test_stop_flushes_what_is_queued(tmp_path: Path) -> None:
    acked: list[tuple[int, int]] = []
    refused = 0
    bus = EmbeddedBus(tmp_path, {"t": 2})
    async with trio.open_nursery() as outer:
        await outer.start(bus.run)

        async def producer(i: int) -> None:
            nonlocal refused
            try:
                while True:
                    acked.extend(await bus.produce([("t", b"%d" % i, b"v")]))
            except BusClosed:
                refused += 1

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(producer, i)
            while len(acked) < 100:
                await trio.sleep(0.001)
            bus.stop()
    assert refused == 20
    async with running(EmbeddedBus(tmp_path, {"t": 2})) as reopened:
        for partition in range(2):
            mine = sorted(o for p, o in acked if p == partition)
            assert mine == list(range(len(mine)))
            assert await reopened.end_offset("t", partition) == len(mine)  # nothing unacknowledged


async def test_stop_with_a_batch_in_flight_and_one_queued(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path, {"t": 1})
    gate = trio.Event()
    write = bus._write_records

    async def gated_write(items: list) -> list:  # type: ignore[type-arg]
        await gate.wait()
        return await write(items)

    bus._write_records = gated_write  # type: ignore[method-assign]
    acks: list[tuple[int, int]] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)

            async def produce(value: bytes) -> None:
                acks.extend(await bus.produce([("t", b"k", value)]))

            nursery.start_soon(produce, b"in-flight")
            await trio.testing.wait_all_tasks_blocked()  # its batch is taken, held at the gate
            nursery.start_soon(produce, b"queued")
            await trio.testing.wait_all_tasks_blocked()
            bus.stop()
            gate.set()
    assert sorted(acks) == [(0, 0), (0, 1)]
    assert bus.statistics().batches_flushed == 2


async def test_assignments_refuse_an_unknown_topic_at_once(tmp_path: Path) -> None:
    async with running(EmbeddedBus(tmp_path, {"a": 3})) as bus:
        with pytest.raises(UnknownTopic):
            bus.assignments("g", ["a", "nope"])  # before the first change is asked for


async def test_directory_is_locked_and_partitions_cannot_shrink(tmp_path: Path) -> None:
    async with running(EmbeddedBus(tmp_path, {"t": 3})) as bus:
        await bus.produce([("t", b"k", b"v")])
        with pytest.raises(BusError, match="in use"):
            await EmbeddedBus(tmp_path, {"t": 3}).run()  # fails before it is ready
    with pytest.raises(ValueError, match="cannot be removed"):
        await EmbeddedBus(tmp_path, {"t": 2}).run()
    async with running(EmbeddedBus(tmp_path, {"t": 4})) as bus:  # growing is fine
        assert await bus.end_offset("t", 3) == 0
        assert sum([await bus.end_offset("t", p) for p in range(4)]) == 1


async def test_run_again_after_stop(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path, {"t": 1})
    async with running(bus):
        await bus.produce([("t", b"k", b"one")])
    async with running(bus):
        await bus.produce([("t", b"k", b"two")])
        assert [r.value for r in await fetch_all(bus, "t", 0)] == [b"one", b"two"]


async def test_a_priority_topic_is_appended_while_a_large_append_of_others_is_being_written(tmp_path: Path) -> None:
    """Priority lanes (issue 10 item 6): a record of a priority topic has a group commit of its own, so it is written
    while another topic's write is in progress (it was queued behind it, for the next batch)."""
    bus = EmbeddedBus(tmp_path / "bus", {"bulk": 2, "urgent": 2}, priority_topics={"urgent"})
    bulk_entered, release = threading.Event(), threading.Event()
    released_by: list[str] = []
    write = bus._log.write_partition

    def gated(part, records):  # noqa: ANN001, ANN202 - the SegmentLog's own signature
        if part.topic == "bulk":
            bulk_entered.set()
            released_by.append("urgent" if release.wait(timeout=10) else "timeout")  # the old tree: never released
        else:
            release.set()  # the urgent write ran while the bulk one was in progress
        return write(part, records)

    bus._log.write_partition = gated  # type: ignore[method-assign]
    async with running(bus):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bus.produce, [("bulk", f"k{i}".encode(), b"v") for i in range(500)])
            await trio.to_thread.run_sync(bulk_entered.wait)
            assert await bus.produce([("urgent", b"otp", b"code")]) == [(kafka_partition(b"otp", 2), 0)]
        assert released_by and set(released_by) == {"urgent"}
        assert len(await fetch_all(bus, "urgent", kafka_partition(b"otp", 2))) == 1
        assert sum([len(await fetch_all(bus, "bulk", p)) for p in range(2)]) == 500


async def test_priority_topics_must_be_topics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="priority topics"):
        EmbeddedBus(tmp_path / "bus", {"bulk": 1}, priority_topics={"urgent"})
