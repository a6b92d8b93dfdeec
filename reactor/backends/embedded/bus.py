"""The embedded Bus: Kafka's semantics on local disk, for a single process.

The adapter part: the Bus port (produce, fetch, commit, assignments) on Trio's side,
over the files of segment_log.py (where the on-disk layout is described), written
through two group commits (reactor/group_commit.py).

`produce` assigns offsets, queues its records and waits; one task hands the whole queue
to worker threads that append each partition's records with one write and one
fdatasync per partition touched, then wakes every producer of the batch. Records become
visible to `fetch` (and count in `end_offset`) only once durable. Commits go the same
way through their own queue into `offsets.log`.

A consumer group's members (each `assignments` stream) share the partitions of the
topics they follow, dealt round-robin in the order they joined; when one joins or
leaves, the others are told what they lose, and a partition goes to its new member only
once its old one has handled the revocation (asked for its next change), so a
partition never has two members at once, as in Kafka's rebalance protocol.

Recent records are kept in memory for fetch: those at or above the lowest offset
committed on the partition, within `cache_bytes` per partition; older ones are read back
from the segments. Whole segments below the lowest committed offset of every group that
committed on the partition are deleted; a partition nobody committed on keeps everything.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_right
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from reactor.group_commit import GroupCommit
from reactor.partitioner import cached_partition
from reactor.ports import Assignment, BusRecord

from .bus_errors import BusClosed, BusCorrupted, BusNotRunning, UnknownTopic
from .segment_log import FRAME_OVERHEAD, Partition, Segment, SegmentLog, Written, delete_files, read_records, segment_base

log = logging.getLogger("herald.bus")
_NOT_RUNNING = "EmbeddedBus is not running: start it first, e.g. `await nursery.start(bus.run)`"

MiB = 1024 * 1024


def _bus_stopped(error: BaseException) -> BaseException:
    """What a producer (or a commit) waiting on a failed group write raises."""
    return BusClosed(f"the bus stopped before this write was acknowledged: {error!r}")

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PartitionWritten = tuple[Partition, list[BusRecord], Written]  # one partition's part of a group write


@dataclass(eq=False)
class _Member:
    """One `assignments` stream of a group: the partitions it was told it owns."""

    topics: frozenset[str]
    owned: set[tuple[str, int]]
    releasing: frozenset[tuple[str, int]] = frozenset()  # revoked in the change it is handling: still its own
    wake: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True)
class BusStatistics:
    records_produced: int
    batches_flushed: int
    fsyncs: int  # every fsync/fdatasync: segments, offsets log, directories
    mean_batch_size: float  # records per flushed batch
    end_offsets: Mapping[tuple[str, int], int]
    commits: int
    commit_batches: int
    segments_deleted: int
    disk_reads: int  # fetches served from the segment files rather than memory
    cached_records: int


class EmbeddedBus:
    """The Bus port on local disk: durable, group-committed, one process."""

    def __init__(
        self,
        directory: Path,
        topics: dict[str, int],
        *,
        segment_bytes: int = 64 * MiB,
        flush_interval_s: float = 0.0,
        cache_bytes: int = 8 * MiB,
        priority_topics: Collection[str] = (),
    ) -> None:
        """`topics` maps each topic to its partition count; `flush_interval_s` > 0 makes
        the writer wait that long after the first queued record (Kafka's linger.ms);
        `cache_bytes` bounds the recent records kept in memory per partition.
        `priority_topics`: their records are written by a group commit of their own (no linger),
        beside the others' (its partitions are theirs alone, so each partition's order holds): a
        record of one never waits for a large append of other topics in progress or queued."""
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be >= 1, got {segment_bytes}")
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, got {flush_interval_s}")
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        for topic, count in topics.items():
            if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
                raise ValueError(f"topic name {topic!r}: use 1-249 of [A-Za-z0-9._-], as Kafka")
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"topic {topic!r}: partition count must be an int >= 1, got {count!r}")
        self.directory = Path(directory)
        self.topics = dict(topics)
        self.segment_bytes = segment_bytes
        self.flush_interval_s = flush_interval_s
        self.cache_bytes = cache_bytes
        self._parts: dict[tuple[str, int], Partition] = {}
        self._groups: dict[str, list[_Member]] = {}  # each group's members, in the order they joined
        self._state = "new"  # new -> opening -> open -> stopping -> stopped (-> opening: run again)
        self._stop_requested = False
        self._records_gc: GroupCommit[tuple[Partition, BusRecord], list[_PartitionWritten]] | None = None
        unknown = set(priority_topics) - set(topics)
        if unknown:
            raise ValueError(f"priority topics {sorted(unknown)} are not among the topics")
        self.priority_topics = frozenset(priority_topics)
        self._priority_gc: GroupCommit[tuple[Partition, BusRecord], list[_PartitionWritten]] | None = None
        self._commits_gc: GroupCommit[tuple[str, Partition, int], int] | None = None
        self._log = SegmentLog(self.directory, self.topics, segment_bytes)  # the files; used from worker threads
        # Statistics (Trio thread).
        self._records = 0
        self._batches = 0
        self._fsyncs = 0
        self._commits = 0
        self._commit_batches = 0
        self._segments_deleted = 0
        self._disk_reads = 0

    # -- the service ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[EmbeddedBus] = trio.TASK_STATUS_IGNORED) -> None:
        """Open (recovering torn tails), signal readiness, write batches until stopped."""
        if self._state in ("opening", "open", "stopping"):
            raise RuntimeError("EmbeddedBus.run() is already running")
        self._state = "opening"
        self._stop_requested = False
        try:
            await trio.to_thread.run_sync(self._open_sync)
            records_gc = self._records_gc = GroupCommit(self._write_records, self._publish_records, self.flush_interval_s, _bus_stopped)
            priority_gc = self._priority_gc = GroupCommit(self._write_records, self._publish_records, 0.0, _bus_stopped)
            commits_gc = self._commits_gc = GroupCommit(self._write_commits_async, self._publish_commits, 0.0, _bus_stopped)
            self._state = "open"
            if self._stop_requested:
                self.stop()
            log.info("bus open at %s: %s", self.directory, {t: self._end_offsets(t) for t in self.topics})
            task_status.started(self)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(records_gc.run)
                nursery.start_soon(priority_gc.run)
                nursery.start_soon(commits_gc.run)
        finally:
            self._state = "stopped"
            closed = BusClosed("the bus stopped")
            for gc in (self._records_gc, self._priority_gc, self._commits_gc):
                if gc is not None:
                    gc.fail_pending(closed)
            for part in self._parts.values():
                part.appended.set()  # fetchers waiting for records see the bus is closed
            self._close_files()

    def stop(self) -> None:
        """Refuse new requests, make everything queued durable, then let `run` return."""
        if self._state == "opening":
            self._stop_requested = True
        if self._state != "open":
            return
        self._state = "stopping"
        for gc in (self._records_gc, self._priority_gc, self._commits_gc):
            if gc is not None:
                gc.stop()
        for part in self._parts.values():
            part.appended.set()

    # -- the Bus port ----------------------------------------------------------------

    def partitions(self, topic: str) -> int:
        try:
            return self.topics[topic]
        except KeyError:
            raise UnknownTopic(f"unknown topic {topic!r}; declared: {sorted(self.topics)}") from None

    def partition_for(self, topic: str, key: bytes) -> int:
        return cached_partition(key, self.partitions(topic))

    async def produce(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
        """Append records; returns (partition, offset) of each once all are fsynced.

        If the caller is cancelled while waiting, its records may still be written.
        """
        self._require_open()
        assert self._records_gc is not None
        if not items:
            await trio.lowlevel.checkpoint()
            return []
        targets: list[tuple[Partition, bytes, bytes]] = []
        for topic, key, value in items:  # validate everything before taking offsets
            if type(key) is not bytes or type(value) is not bytes:
                if not isinstance(key, (bytes, bytearray, memoryview)) or not isinstance(value, (bytes, bytearray, memoryview)):
                    raise TypeError(f"key and value must be bytes, got {type(key).__name__}, {type(value).__name__}")
                key, value = bytes(key), bytes(value)
            count = self.topics.get(topic)
            if count is None:
                count = self.partitions(topic)  # raises UnknownTopic
            targets.append((self._parts[(topic, cached_partition(key, count))], key, value))
        queued: list[tuple[Partition, BusRecord]] = []
        urgent: list[tuple[Partition, BusRecord]] = []  # of the priority topics: their own group commit
        priority = self.priority_topics
        result: list[tuple[int, int]] = []
        for part, key, value in targets:
            offset = part.next_offset
            part.next_offset = offset + 1
            (urgent if priority and part.topic in priority else queued).append((part, BusRecord(part.topic, part.number, offset, key, value)))
            result.append((part.number, offset))
        if urgent:
            assert self._priority_gc is not None
            written = self._priority_gc.submit(urgent)
            if queued:
                await self._records_gc.submit(queued).wait()
            await written.wait()
        else:
            await self._records_gc.submit(queued).wait()
        return result

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        """Records from `offset` on (at most `max_records`, at least one): waits for one.

        An offset below the log start (deleted by retention) reads from the log start;
        the records carry their offsets, so the caller sees the jump.
        """
        part = self._partition(topic, partition)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        while True:
            self._require_open()
            if self._parts.get((topic, partition)) is not part:
                raise BusClosed("the bus restarted while this fetch waited")  # `part` is stale
            if offset > part.end:
                raise ValueError(f"{topic}/{partition}: offset {offset} is beyond the end offset {part.end}")
            start = max(offset, part.log_start)
            if start >= part.end:
                await part.appended.wait()
                continue
            cache_base = part.cache_base
            if start >= cache_base:
                first = part.head + (start - cache_base)
                await trio.lowlevel.checkpoint()
                return part.cache[first : first + max_records]
            count = min(max_records, cache_base - start)
            at = bisect_right(part.segments, start, key=segment_base) - 1
            segments = part.segments[at:]
            try:
                rows = await trio.to_thread.run_sync(read_records, segments, start, count, abandon_on_cancel=True)
            except FileNotFoundError:
                continue  # retention deleted the segment meanwhile: read from the new start
            if not rows:
                raise BusCorrupted(f"{topic}/{partition}: no record readable at offset {start}")
            self._disk_reads += 1
            return [BusRecord(topic, partition, off, key, value) for off, key, value in rows]

    async def commit(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        """Durably store the group's next offset; backwards is allowed, past the end not."""
        part = self._partition(topic, partition)
        self._require_open()
        assert self._commits_gc is not None
        if not group:
            raise ValueError("group must be a non-empty string")
        if len(group.encode()) > 0xFFFF:
            raise ValueError("group name too long")
        if next_offset < 0 or next_offset > part.end:
            raise ValueError(f"{topic}/{partition}: cannot commit {next_offset}: outside [0, end offset {part.end}]")
        await self._commits_gc.submit(((group, part, next_offset),)).wait()

    async def committed(self, group: str, topic: str, partition: int) -> int:
        part = self._partition(topic, partition)
        self._require_open()
        await trio.lowlevel.checkpoint()
        return part.commits.get(group, 0)

    async def end_offset(self, topic: str, partition: int) -> int:
        """The durable end: all offsets below it are fetchable; the next record gets >= it."""
        part = self._partition(topic, partition)
        self._require_open()
        await trio.lowlevel.checkpoint()
        return part.end

    def assignments(self, group: str, topics: Sequence[str]) -> AsyncGenerator[Assignment, None]:
        """Join the group: the member's share of the topics' partitions, then each change of it until the stream closes."""
        for topic in topics:
            self.partitions(topic)  # raises UnknownTopic now, not at the first change
        return self._member(group, _Member(frozenset(topics), set()))

    async def _member(self, group: str, member: _Member) -> AsyncGenerator[Assignment, None]:
        members = self._groups.setdefault(group, [])
        members.append(member)
        self._wake(members)
        try:
            while True:
                member.wake = trio.Event()
                change = self._change(members, member)
                if change is None:
                    await member.wake.wait()
                    continue
                yield change
                if member.releasing:  # the member handled the revocation: the partitions may go to their new member
                    member.releasing = frozenset()
                    self._wake(members)
        finally:
            members.remove(member)
            if not members:
                del self._groups[group]
            self._wake(members)

    def _targets(self, members: list[_Member]) -> dict[int, set[tuple[str, int]]]:
        """Each member's share (by id): every topic's partitions dealt round-robin over the members following it."""
        shares: dict[int, set[tuple[str, int]]] = {id(m): set() for m in members}
        for topic in sorted({t for m in members for t in m.topics}):
            following = [m for m in members if topic in m.topics]
            for number in range(self.partitions(topic)):
                shares[id(following[number % len(following)])].add((topic, number))
        return shares

    def _held_by_others(self, members: list[_Member], member: _Member) -> set[tuple[str, int]]:
        """The partitions another member owns or is still letting go of."""
        return {p for m in members if m is not member for p in (m.owned | m.releasing)}

    def _change(self, members: list[_Member], member: _Member) -> Assignment | None:
        """What to tell the member now: what it loses, and what it gains that nobody else still holds."""
        target = self._targets(members)[id(member)]
        revoked = member.owned - target
        assigned = target - member.owned - self._held_by_others(members, member)
        if not revoked and not assigned:
            return None
        member.owned = (member.owned - revoked) | assigned
        member.releasing = frozenset(revoked)
        return Assignment(assigned=frozenset(assigned), revoked=frozenset(revoked))

    @staticmethod
    def _wake(members: list[_Member]) -> None:
        for m in members:
            m.wake.set()

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            records_produced=self._records,
            batches_flushed=self._batches,
            fsyncs=self._fsyncs,
            mean_batch_size=self._records / self._batches if self._batches else 0.0,
            end_offsets={key: part.end for key, part in self._parts.items()},
            commits=self._commits,
            commit_batches=self._commit_batches,
            segments_deleted=self._segments_deleted,
            disk_reads=self._disk_reads,
            cached_records=sum(len(part.cache) - part.head for part in self._parts.values()),
        )

    # -- helpers (Trio thread) -----------------------------------------------------------

    def _require_open(self) -> None:
        state = self._state
        if state == "open":
            return
        if state == "new":
            raise BusNotRunning(_NOT_RUNNING)
        if state == "opening":
            raise BusNotRunning("EmbeddedBus is still opening: wait for `nursery.start(bus.run)` to return")
        raise BusClosed(f"the bus is {state}")

    def _partition(self, topic: str, partition: int) -> Partition:
        count = self.partitions(topic)
        if not 0 <= partition < count:
            raise ValueError(f"topic {topic!r} has partitions 0..{count - 1}, not {partition}")
        part = self._parts.get((topic, partition))
        if part is None:
            raise BusNotRunning(_NOT_RUNNING)
        return part

    def _end_offsets(self, topic: str) -> list[int]:
        return [self._parts[(topic, n)].end for n in range(self.topics[topic])]

    def _trim(self, part: Partition) -> None:
        """Drop cached records below every committed offset, and the oldest past the budget."""
        cache = part.cache
        head = part.head
        floor = min(part.commits.values()) if part.commits else -1
        size = part.cache_bytes
        budget = self.cache_bytes
        while head < len(cache):
            record = cache[head]
            if record.offset >= floor and size <= budget:
                break
            size -= FRAME_OVERHEAD + len(record.key) + len(record.value)
            head += 1
        if head > 256 and head * 2 > len(cache):
            del cache[:head]
            head = 0
        part.head = head
        part.cache_bytes = size

    def _retention(self, part: Partition) -> list[Path]:
        """Take the segments wholly below every group's commit out of the log."""
        if not part.commits:
            return []
        floor = min(part.commits.values())
        doomed = []
        while len(part.segments) > 1 and part.segments[1].base <= floor:
            doomed.append(part.segments.pop(0).path)
        return doomed

    async def _write_records(self, items: list[tuple[Partition, BusRecord]]) -> list[_PartitionWritten]:
        """Write and fdatasync each partition's records, the partitions concurrently.

        One thread per partition touched: concurrent fdatasyncs of different files share
        one journal commit (ext4: 8 files take ~1 sync's time, ~8x that in sequence).
        """
        by_partition: dict[Partition, list[BusRecord]] = {}
        for part, record in items:
            records = by_partition.get(part)
            if records is None:
                by_partition[part] = [record]
            else:
                records.append(record)
        written: list[_PartitionWritten] = []

        async def write(part: Partition, records: list[BusRecord]) -> None:
            # Not abandoned on cancel: a write in progress always completes.
            written.append((part, records, await trio.to_thread.run_sync(self._log.write_partition, part, records)))

        if len(by_partition) == 1:
            [(part, records)] = by_partition.items()
            await write(part, records)
        else:
            async with trio.open_nursery() as nursery:
                for part, records in by_partition.items():
                    nursery.start_soon(write, part, records)
        return written

    async def _write_commits_async(self, items: list[tuple[str, Partition, int]]) -> int:
        return await trio.to_thread.run_sync(self._log.write_commits, items)

    def _publish_records(self, items: list[tuple[Partition, BusRecord]], written: list[_PartitionWritten]) -> None:
        self._batches += 1
        self._records += len(items)
        for part, records, (events, size, fsyncs) in written:
            self._fsyncs += fsyncs
            for event in events:
                if isinstance(event, Segment):
                    part.segments.append(event)
                else:
                    part.segments[-1].add_to_index(*event)
            part.cache.extend(records)
            part.cache_bytes += size
            part.end = records[-1].offset + 1
            appended, part.appended = part.appended, trio.Event()
            appended.set()
            self._trim(part)
        return None

    def _publish_commits(self, items: list[tuple[str, Partition, int]], fsyncs: int) -> Callable[[], None] | None:
        self._fsyncs += fsyncs
        self._commit_batches += 1
        self._commits += len(items)
        touched: dict[int, Partition] = {}
        for group, part, offset in items:
            part.commits[group] = offset
            touched[id(part)] = part
        doomed: list[Path] = []
        for part in touched.values():
            self._trim(part)
            doomed += self._retention(part)
        if not doomed:
            return None
        self._segments_deleted += len(doomed)
        self._fsyncs += len({path.parent for path in doomed})
        return lambda: delete_files(doomed)

    # -- blocking I/O (worker threads) ------------------------------------------------

    def _open_sync(self) -> None:
        self._parts = self._log.open()
        for part in self._parts.values():
            doomed = self._retention(part)
            if doomed:
                delete_files(doomed)
                self._segments_deleted += len(doomed)

    def _close_files(self) -> None:
        self._log.close()
