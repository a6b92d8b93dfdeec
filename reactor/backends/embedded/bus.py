"""The embedded Bus: Kafka's semantics on local disk, for a single process.

Layout under `directory`:

    FORMAT                        "herald-embedded-bus 1"
    LOCK                          flock'ed while a bus runs on the directory
    logs/<topic>-<p>/<base>.log   segments of partition p; <base> (20 digits) is the
                                  offset of its first record
    offsets.log                   the groups' committed offsets, one entry per commit

A segment is a run of records, each framed as
`crc32 u32 | length u32 | offset u64 | key_len u32 | key | value` (little endian;
`length` counts the bytes after itself, the CRC covers them all). Only the last segment
of a partition is written to; once it reaches `segment_bytes` it is fsynced and sealed
before the next one is created, so after a crash only the last segment can have a torn
tail. Recovery scans it and truncates it at the first record whose length, offset
(they are dense) or CRC is wrong. Sealed segments are scanned lazily, when a fetch first
needs them.

Group commit: `produce` assigns offsets, queues its records and waits; one task hands
the whole queue to a thread that appends each partition's records with one write and
one fdatasync per partition touched, then wakes every producer of the batch. Records
become visible to `fetch` (and count in `end_offset`) only once durable. Commits go the
same way through their own queue into `offsets.log` (`crc32 u32 | length u32 |
next_offset u64 | partition u32 | group_len u16 | topic_len u16 | group | topic`),
which is compacted to its live entries by write-tmp, fsync, rename, fsync-dir.

Recent records are kept in memory for fetch: those at or above the lowest offset
committed on the partition, within `cache_bytes` per partition; older ones are read back
from the segments through a sparse index (one entry per 4 KiB). Whole segments below the
lowest committed offset of every group that committed on the partition are deleted; a
partition nobody committed on keeps everything.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from array import array
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import trio

from reactor.files import fsync_dir as _fsync_dir, write_all as _write_all, write_atomically as _write_atomically
from reactor.partitioner import kafka_partition
from reactor.ports import Assignment, Record

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("herald.bus")
_NOT_RUNNING = "EmbeddedBus is not running: start it first, e.g. `await nursery.start(bus.run)`"

MiB = 1024 * 1024
FORMAT = b"herald-embedded-bus 1\n"
INDEX_INTERVAL_BYTES = 4096  # one sparse-index entry per this many bytes of records
COMPACT_MIN_ENTRIES = 4096  # offsets.log is compacted past this many entries ...
COMPACT_RATIO = 4  # ... when they outnumber the live ones this many times

_CRC = struct.Struct("<I")
_HEAD = struct.Struct("<IQI")  # length, offset, key_len: the start of what the CRC covers
_FRAME = struct.Struct("<IIQI")  # crc + _HEAD
_FRAME_OVERHEAD = _FRAME.size  # 20
_BODY_MIN = _HEAD.size - 4  # offset + key_len: the least `length` can be
_COMMIT = struct.Struct("<IIQIHH")  # crc, length, next_offset, partition, group_len, topic_len
_COMMIT_BODY_MIN = _COMMIT.size - 8
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SYNC = getattr(os, "fdatasync", os.fsync)  # appends: the data and the new size, no mtime

T = TypeVar("T")
R = TypeVar("R")


class BusError(Exception):
    """The embedded bus cannot serve the request."""


class BusNotRunning(BusError, RuntimeError):
    """Used before `run()` was started (or after it ended)."""


class BusClosed(BusError):
    """The bus stopped (or failed) before the request completed."""


class BusCorrupted(BusError):
    """A sealed segment or a durable record does not read back as written."""


class UnknownTopic(KeyError, ValueError):
    """The topic was not declared when the bus was built."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown topic"


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


class _Segment:
    """One segment file and its sparse index: record `offsets[i]` is at `positions[i]`."""

    __slots__ = ("base", "path", "offsets", "positions", "indexed")

    def __init__(self, base: int, path: Path, index: tuple[array[int], array[int]] | None = None) -> None:
        self.base = base
        self.path = path
        self.offsets, self.positions = index if index is not None else (array("q"), array("q"))
        self.indexed = index is not None  # sealed segments found at open are indexed lazily

    def add_to_index(self, offset: int, position: int) -> None:
        # Positions first: a reader thread that finds an offset finds its position.
        self.positions.append(position)
        self.offsets.append(offset)


class _Partition:
    __slots__ = (
        "topic", "number", "path", "fd", "active_size", "unindexed",
        "segments", "end", "next_offset", "cache", "head", "cache_bytes", "appended", "commits",
    )  # fmt: skip

    def __init__(self, topic: str, number: int, path: Path) -> None:
        self.topic = topic
        self.number = number
        self.path = path
        # Owned by the writer thread while the bus runs: the last segment's file.
        self.fd = -1
        self.active_size = 0
        self.unindexed = INDEX_INTERVAL_BYTES  # bytes written since the last index entry
        # Owned by the Trio thread.
        self.segments: list[_Segment] = []
        self.end = 0  # durable end: every offset below is fsynced and fetchable
        self.next_offset = 0  # the offset the next produced record gets (>= end)
        self.cache: list[Record] = []  # records [end - (len(cache) - head), end)
        self.head = 0
        self.cache_bytes = 0
        self.appended = trio.Event()  # set (and replaced) whenever `end` moves
        self.commits: dict[str, int] = {}  # group -> committed next offset

    @property
    def cache_base(self) -> int:
        return self.end - (len(self.cache) - self.head)

    @property
    def log_start(self) -> int:
        return self.segments[0].base


class _Batch(Generic[T]):
    __slots__ = ("items", "done", "error")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.done = trio.Event()
        self.error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise BusClosed(f"the bus stopped before this write was acknowledged: {self.error!r}") from self.error


class _GroupCommit(Generic[T, R]):
    """Concurrent callers queue items; one task writes each queue-full at once.

    `write(items)` makes the items durable (in worker threads; a write in progress is
    never abandoned); `publish(items, result)` applies the result in Trio and may return
    follow-up work for a thread (retention), done before the callers wake. While a batch
    is being written the next one fills.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[R]],
        publish: Callable[[list[T], R], Callable[[], Any] | None],
        linger_s: float,
    ) -> None:
        self._write = write
        self._publish = publish
        self._linger_s = linger_s
        self._batch: _Batch[T] = _Batch()
        self._wake = trio.Event()
        self._stopping = False

    def submit(self, items: Sequence[T]) -> _Batch[T]:
        batch = self._batch
        batch.items.extend(items)
        self._wake.set()
        return batch

    def stop(self) -> None:
        """Write what is queued, then let `run` return."""
        self._stopping = True
        self._wake.set()

    def fail_pending(self, error: BaseException) -> None:
        self._batch.fail(error)

    async def run(self) -> None:
        while True:
            while not self._batch.items:
                if self._stopping:
                    return
                wake = self._wake = trio.Event()  # submit() and stop() set it
                await wake.wait()
            if self._linger_s > 0 and not self._stopping:
                await trio.sleep(self._linger_s)
            batch, self._batch = self._batch, _Batch()
            try:
                result = await self._write(batch.items)
            except BaseException as exc:
                batch.fail(exc)
                raise
            try:  # durable from here on: the callers are acknowledged whatever happens
                follow_up = self._publish(batch.items, result)
                if follow_up is not None:
                    await trio.to_thread.run_sync(follow_up)
            finally:
                batch.done.set()


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
    ) -> None:
        """`topics` maps each topic to its partition count; `flush_interval_s` > 0 makes
        the writer wait that long after the first queued record (Kafka's linger.ms);
        `cache_bytes` bounds the recent records kept in memory per partition."""
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
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._state = "new"  # new -> opening -> open -> stopping -> stopped (-> opening: run again)
        self._stop_requested = False
        self._records_gc: _GroupCommit[tuple[_Partition, Record], Any] | None = None
        self._commits_gc: _GroupCommit[tuple[str, _Partition, int], Any] | None = None
        self._lock_fd = -1
        # Owned by the commit writer thread while running.
        self._offsets_fd = -1
        self._offsets_live: dict[tuple[str, str, int], int] = {}
        self._offsets_entries = 0
        # Statistics (Trio thread).
        self._records = 0
        self._batches = 0
        self._fsyncs = 0
        self._commits = 0
        self._commit_batches = 0
        self._segments_deleted = 0
        self._disk_reads = 0

    # -- the service ---------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Open (recovering torn tails), signal readiness, write batches until stopped."""
        if self._state in ("opening", "open", "stopping"):
            raise RuntimeError("EmbeddedBus.run() is already running")
        self._state = "opening"
        self._stop_requested = False
        try:
            await trio.to_thread.run_sync(self._open_sync)
            records_gc = self._records_gc = _GroupCommit(self._write_records, self._publish_records, self.flush_interval_s)
            commits_gc = self._commits_gc = _GroupCommit(self._write_commits_async, self._publish_commits, 0.0)
            self._state = "open"
            if self._stop_requested:
                self.stop()
            log.info("bus open at %s: %s", self.directory, {t: self._end_offsets(t) for t in self.topics})
            task_status.started(self)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(records_gc.run)
                nursery.start_soon(commits_gc.run)
        finally:
            self._state = "stopped"
            closed = BusClosed("the bus stopped")
            for gc in (self._records_gc, self._commits_gc):
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
        for gc in (self._records_gc, self._commits_gc):
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
        return kafka_partition(key, self.partitions(topic))

    async def produce(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
        """Append records; returns (partition, offset) of each once all are fsynced.

        If the caller is cancelled while waiting, its records may still be written.
        """
        self._require_open()
        assert self._records_gc is not None
        if not items:
            await trio.lowlevel.checkpoint()
            return []
        targets: list[tuple[_Partition, bytes, bytes]] = []
        for topic, key, value in items:  # validate everything before taking offsets
            if type(key) is not bytes or type(value) is not bytes:
                if not isinstance(key, (bytes, bytearray, memoryview)) or not isinstance(value, (bytes, bytearray, memoryview)):
                    raise TypeError(f"key and value must be bytes, got {type(key).__name__}, {type(value).__name__}")
                key, value = bytes(key), bytes(value)
            count = self.topics.get(topic)
            if count is None:
                self.partitions(topic)  # raises UnknownTopic
            targets.append((self._parts[(topic, kafka_partition(key, count))], key, value))  # type: ignore[arg-type]
        queued: list[tuple[_Partition, Record]] = []
        result: list[tuple[int, int]] = []
        for part, key, value in targets:
            offset = part.next_offset
            part.next_offset = offset + 1
            queued.append((part, Record(part.topic, part.number, offset, key, value)))
            result.append((part.number, offset))
        await self._records_gc.submit(queued).wait()
        return result

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
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
            at = bisect_right(part.segments, start, key=_segment_base) - 1
            segments = part.segments[at:]
            try:
                rows = await trio.to_thread.run_sync(_read_records, segments, start, count, abandon_on_cancel=True)
            except FileNotFoundError:
                continue  # retention deleted the segment meanwhile: read from the new start
            if not rows:
                raise BusCorrupted(f"{topic}/{partition}: no record readable at offset {start}")
            self._disk_reads += 1
            return [Record(topic, partition, off, key, value) for off, key, value in rows]

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

    def assignments(self, group: str, topics: Sequence[str]) -> AsyncIterator[Assignment]:
        """The single member of every group: all partitions at once, then no change."""
        assigned = frozenset((topic, number) for topic in topics for number in range(self.partitions(topic)))
        return self._assignments(assigned)

    async def _assignments(self, assigned: frozenset[tuple[str, int]]) -> AsyncIterator[Assignment]:
        yield Assignment(assigned=assigned, revoked=frozenset())
        await trio.sleep_forever()

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

    def _partition(self, topic: str, partition: int) -> _Partition:
        count = self.partitions(topic)
        if not 0 <= partition < count:
            raise ValueError(f"topic {topic!r} has partitions 0..{count - 1}, not {partition}")
        part = self._parts.get((topic, partition))
        if part is None:
            raise BusNotRunning(_NOT_RUNNING)
        return part

    def _end_offsets(self, topic: str) -> list[int]:
        return [self._parts[(topic, n)].end for n in range(self.topics[topic])]

    def _trim(self, part: _Partition) -> None:
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
            size -= _FRAME_OVERHEAD + len(record.key) + len(record.value)
            head += 1
        if head > 256 and head * 2 > len(cache):
            del cache[:head]
            head = 0
        part.head = head
        part.cache_bytes = size

    def _retention(self, part: _Partition) -> list[Path]:
        """Take the segments wholly below every group's commit out of the log."""
        if not part.commits:
            return []
        floor = min(part.commits.values())
        doomed = []
        while len(part.segments) > 1 and part.segments[1].base <= floor:
            doomed.append(part.segments.pop(0).path)
        return doomed

    async def _write_records(self, items: list[tuple[_Partition, Record]]) -> list[tuple[_Partition, list[Record], Any]]:
        """Write and fdatasync each partition's records, the partitions concurrently.

        One thread per partition touched: concurrent fdatasyncs of different files share
        one journal commit (ext4: 8 files take ~1 sync's time, ~8x that in sequence).
        """
        by_partition: dict[_Partition, list[Record]] = {}
        for part, record in items:
            records = by_partition.get(part)
            if records is None:
                by_partition[part] = [record]
            else:
                records.append(record)
        written: list[tuple[_Partition, list[Record], Any]] = []

        async def write(part: _Partition, records: list[Record]) -> None:
            # Not abandoned on cancel: a write in progress always completes.
            written.append((part, records, await trio.to_thread.run_sync(self._write_partition, part, records)))

        if len(by_partition) == 1:
            [(part, records)] = by_partition.items()
            await write(part, records)
        else:
            async with trio.open_nursery() as nursery:
                for part, records in by_partition.items():
                    nursery.start_soon(write, part, records)
        return written

    async def _write_commits_async(self, items: list[tuple[str, _Partition, int]]) -> int:
        return await trio.to_thread.run_sync(self._write_commits, items)

    def _publish_records(self, items: list[tuple[_Partition, Record]], written: list[tuple[_Partition, list[Record], Any]]) -> None:
        self._batches += 1
        self._records += len(items)
        for part, records, (events, size, fsyncs) in written:
            self._fsyncs += fsyncs
            for event in events:
                if isinstance(event, _Segment):
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

    def _publish_commits(self, items: list[tuple[str, _Partition, int]], fsyncs: int) -> Callable[[], None] | None:
        self._fsyncs += fsyncs
        self._commit_batches += 1
        self._commits += len(items)
        touched: dict[int, _Partition] = {}
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
        return lambda: _delete_files(doomed)

    # -- blocking I/O (worker threads) ------------------------------------------------

    def _open_sync(self) -> None:
        root = self.directory
        root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(root / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = -1
                raise BusError(f"{root} is in use by another EmbeddedBus") from None
        try:
            self._open_files_sync()
        except BaseException:
            self._close_files()
            raise

    def _open_files_sync(self) -> None:
        root = self.directory
        fmt = root / "FORMAT"
        if fmt.exists():
            if fmt.read_bytes() != FORMAT:
                raise BusError(f"{fmt}: not {FORMAT.decode().strip()!r}")
        else:
            _write_atomically(fmt, FORMAT)
        logs = root / "logs"
        if not logs.exists():
            logs.mkdir()
            _fsync_dir(root)
        for name in os.listdir(logs):
            topic, _, number = name.rpartition("-")
            if topic in self.topics and number.isdigit() and int(number) >= self.topics[topic]:
                raise ValueError(
                    f"{logs / name} exists but topic {topic!r} is declared with {self.topics[topic]} partitions: "
                    "partitions cannot be removed"
                )
        self._parts = {}
        for topic, count in self.topics.items():
            for number in range(count):
                part = _Partition(topic, number, logs / f"{topic}-{number}")
                self._recover_partition(part)
                self._parts[(topic, number)] = part
        self._recover_offsets()
        for part in self._parts.values():
            doomed = self._retention(part)
            if doomed:
                _delete_files(doomed)
                self._segments_deleted += len(doomed)

    def _recover_partition(self, part: _Partition) -> None:
        if not part.path.exists():
            part.path.mkdir()
            _fsync_dir(part.path.parent)
        bases = sorted(int(name[:-4]) for name in os.listdir(part.path) if name.endswith(".log") and name[:-4].isdigit())
        if not bases:
            bases = [0]
            os.close(os.open(_segment_path(part.path, 0), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            _fsync_dir(part.path)
        last = bases[-1]
        path = _segment_path(part.path, last)
        index, end, valid = _scan_segment(path, last)
        size = path.stat().st_size
        if valid < size:
            log.warning("%s: truncating a torn or corrupt tail: %d bytes after offset %d", path, size - valid, end)
            fd = os.open(path, os.O_RDWR)
            try:
                os.ftruncate(fd, valid)
                os.fsync(fd)
            finally:
                os.close(fd)
        part.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        part.active_size = valid
        part.unindexed = valid - index[1][-1] if index[1] else INDEX_INTERVAL_BYTES
        part.segments = [_Segment(base, _segment_path(part.path, base)) for base in bases[:-1]]
        part.segments.append(_Segment(last, path, index))
        part.end = part.next_offset = end
        part.cache, part.head, part.cache_bytes = [], 0, 0

    def _recover_offsets(self) -> None:
        path = self.directory / "offsets.log"
        tmp = path.with_name("offsets.log.tmp")
        if tmp.exists():
            tmp.unlink()  # a compaction that did not reach its rename
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            _fsync_dir(self.directory)
        data = path.read_bytes()
        live: dict[tuple[str, str, int], int] = {}
        pos = entries = 0
        while pos + _COMMIT.size <= len(data):
            crc, length, offset, number, group_len, topic_len = _COMMIT.unpack_from(data, pos)
            if length != _COMMIT_BODY_MIN + group_len + topic_len or pos + 8 + length > len(data):
                break
            if zlib.crc32(memoryview(data)[pos + 4 : pos + 8 + length]) != crc:
                break
            names = pos + _COMMIT.size
            try:
                group = data[names : names + group_len].decode()
                topic = data[names + group_len : names + group_len + topic_len].decode()
            except UnicodeDecodeError:
                break
            live[(group, topic, number)] = offset
            entries += 1
            pos += 8 + length
        if pos < len(data):
            log.warning("%s: truncating a torn or corrupt tail of %d bytes", path, len(data) - pos)
            os.truncate(path, pos)
            fd = os.open(path, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._offsets_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._offsets_live = live
        self._offsets_entries = entries
        for (group, topic, number), offset in live.items():
            part = self._parts.get((topic, number))
            if part is None:
                continue  # a topic not declared now: kept in the file, not served
            if offset > part.end:
                log.warning("%s/%d: group %r committed %d beyond the end %d", topic, number, group, offset, part.end)
                offset = part.end
            part.commits[group] = offset

    def _write_partition(self, part: _Partition, records: list[Record]) -> tuple[list[Any], int, int]:
        """Append records to the partition's last segment (rolling as needed) and sync.

        Returns (events for the Trio thread to apply: sparse-index entries and new
        segments, in order; bytes of records; fsyncs made).
        """
        events: list[Any] = []
        fsyncs = 0
        crc32 = zlib.crc32
        pack_head = _HEAD.pack
        pack_crc = _CRC.pack
        limit = self.segment_bytes
        buf = bytearray()
        total = 0
        for record in records:
            key = record.key
            value = record.value
            if part.active_size + len(buf) >= limit:
                _write_all(part.fd, buf)
                part.active_size += len(buf)
                buf = bytearray()
                fsyncs += self._roll(part, record.offset, events)
            if part.unindexed >= INDEX_INTERVAL_BYTES:
                events.append((record.offset, part.active_size + len(buf)))
                part.unindexed = 0
            head = pack_head(_BODY_MIN + len(key) + len(value), record.offset, len(key))
            buf += pack_crc(crc32(value, crc32(key, crc32(head))))
            buf += head
            buf += key
            buf += value
            size = _FRAME_OVERHEAD + len(key) + len(value)
            part.unindexed += size
            total += size
        _write_all(part.fd, buf)
        part.active_size += len(buf)
        _SYNC(part.fd)
        return events, total, fsyncs + 1

    def _roll(self, part: _Partition, base: int, events: list[Any]) -> int:
        """Seal the last segment (fsync it first) and start a new one at `base`."""
        _SYNC(part.fd)
        os.close(part.fd)
        part.fd = -1
        path = _segment_path(part.path, base)
        part.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _fsync_dir(part.path)
        part.active_size = 0
        part.unindexed = INDEX_INTERVAL_BYTES
        events.append(_Segment(base, path, (array("q"), array("q"))))
        return 2

    def _write_commits(self, items: list[tuple[str, _Partition, int]]) -> int:
        buf = bytearray()
        live = self._offsets_live
        for group, part, offset in items:
            buf += _encode_commit(group, part.topic, part.number, offset)
            live[(group, part.topic, part.number)] = offset
        _write_all(self._offsets_fd, buf)
        _SYNC(self._offsets_fd)
        self._offsets_entries += len(items)
        if self._offsets_entries > max(COMPACT_MIN_ENTRIES, COMPACT_RATIO * len(live)):
            return 1 + self._compact_offsets()
        return 1

    def _compact_offsets(self) -> int:
        """Rewrite offsets.log with one entry per (group, topic, partition)."""
        path = self.directory / "offsets.log"
        data = b"".join(_encode_commit(g, t, n, offset) for (g, t, n), offset in self._offsets_live.items())
        _write_atomically(path, data)
        os.close(self._offsets_fd)
        self._offsets_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._offsets_entries = len(self._offsets_live)
        return 2

    def _close_files(self) -> None:
        for part in self._parts.values():
            if part.fd >= 0:
                os.close(part.fd)
                part.fd = -1
        for name in ("_offsets_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)  # closing the lock's fd releases the flock
                setattr(self, name, -1)


# -- file helpers -----------------------------------------------------------------------

_segment_base = lambda segment: segment.base  # noqa: E731 - bisect key


def _segment_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}.log"


def _encode_commit(group: str, topic: str, partition: int, offset: int) -> bytes:
    g = group.encode()
    t = topic.encode()
    body = _COMMIT.pack(0, _COMMIT_BODY_MIN + len(g) + len(t), offset, partition, len(g), len(t))[4:] + g + t
    return _CRC.pack(zlib.crc32(body)) + body


def _delete_files(paths: list[Path]) -> None:
    """Delete segments retention dropped; a failure leaves a file behind, nothing worse."""
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("retention could not delete %s: %r", path, exc)
    for directory in {path.parent for path in paths}:
        try:
            _fsync_dir(directory)
        except OSError as exc:
            log.warning("retention could not fsync %s: %r", directory, exc)


def _scan_segment(path: Path, base: int) -> tuple[tuple[array[int], array[int]], int, int]:
    """Validate a segment from its start: (sparse index, end offset, bytes of good records)."""
    data = path.read_bytes()
    view = memoryview(data)
    offsets: array[int] = array("q")
    positions: array[int] = array("q")
    unpack = _FRAME.unpack_from
    crc32 = zlib.crc32
    size = len(data)
    pos = 0
    at = base
    unindexed = INDEX_INTERVAL_BYTES
    while pos + _FRAME_OVERHEAD <= size:
        crc, length, offset, key_len = unpack(data, pos)
        if length < _BODY_MIN or key_len > length - _BODY_MIN or pos + 8 + length > size or offset != at:
            break
        if crc32(view[pos + 4 : pos + 8 + length]) != crc:
            break
        if unindexed >= INDEX_INTERVAL_BYTES:
            offsets.append(at)
            positions.append(pos)
            unindexed = 0
        unindexed += 8 + length
        pos += 8 + length
        at += 1
    return (offsets, positions), at, pos


def _read_frame(f: BinaryIO, path: Path) -> tuple[int, bytes, bytes] | None:
    head = f.read(_FRAME_OVERHEAD)
    if not head:
        return None
    if len(head) < _FRAME_OVERHEAD:
        raise BusCorrupted(f"{path}: truncated record header")
    crc, length, offset, key_len = _FRAME.unpack(head)
    if length < _BODY_MIN or key_len > length - _BODY_MIN:
        raise BusCorrupted(f"{path}: bad record length at offset {offset}")
    rest = f.read(length - _BODY_MIN)
    if len(rest) < length - _BODY_MIN or zlib.crc32(rest, zlib.crc32(memoryview(head)[4:])) != crc:
        raise BusCorrupted(f"{path}: bad record at offset {offset}")
    return offset, rest[:key_len], rest[key_len:]


def _read_records(segments: list[_Segment], start: int, count: int) -> list[tuple[int, bytes, bytes]]:
    """Read `count` durable records from `start` on, through the segments' sparse indexes."""
    out: list[tuple[int, bytes, bytes]] = []
    at = start
    for i, segment in enumerate(segments):
        next_base = segments[i + 1].base if i + 1 < len(segments) else None
        if not segment.indexed:
            index, end, valid = _scan_segment(segment.path, segment.base)
            if end != next_base or valid != segment.path.stat().st_size:
                raise BusCorrupted(f"{segment.path}: a sealed segment reads as offsets {segment.base}..{end}, expected ..{next_base}")
            segment.positions = index[1]
            segment.offsets = index[0]
            segment.indexed = True
        offsets = segment.offsets
        j = bisect_right(offsets, at) - 1
        if j < 0:
            raise BusCorrupted(f"{segment.path}: offset {at} is not in this segment")
        current, position = offsets[j], segment.positions[j]
        with open(segment.path, "rb") as f:
            f.seek(position)
            while len(out) < count:
                frame = _read_frame(f, segment.path)
                if frame is None:
                    break
                if frame[0] != current:
                    raise BusCorrupted(f"{segment.path}: found offset {frame[0]} where {current} belongs")
                current += 1
                if frame[0] >= at:
                    out.append(frame)
        if len(out) >= count:
            break
        if next_base is not None and current != next_base:
            raise BusCorrupted(f"{segment.path}: ends at offset {current}, the next segment starts at {next_base}")
        at = current
    return out
