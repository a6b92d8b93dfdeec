"""The embedded bus's files: segments of records per partition, and the groups' committed offsets.

Layout under the bus's directory:

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
needs them, through a sparse index (one entry per 4 KiB of records).

`offsets.log` holds `crc32 u32 | length u32 | next_offset u64 | partition u32 |
group_len u16 | topic_len u16 | group | topic` per commit, and is compacted to its live
entries by write-tmp, fsync, rename, fsync-dir.

Everything here blocks: the bus (bus.py) calls it from worker threads.
"""

from __future__ import annotations

import fcntl  # POSIX only, as the data dir lock (lock.py)
import logging
import os
import struct
import zlib
from array import array
from bisect import bisect_right
from pathlib import Path
from typing import BinaryIO

import trio

from reactor.files import fsync_dir, write_all, write_atomically
from reactor.ports import BusRecord

from .bus_errors import BusCorrupted, BusError


log = logging.getLogger("herald.bus")

FORMAT = b"herald-embedded-bus 1\n"
INDEX_INTERVAL_BYTES = 4096  # one sparse-index entry per this many bytes of records
COMPACT_MIN_ENTRIES = 4096  # offsets.log is compacted past this many entries ...
COMPACT_RATIO = 4  # ... when they outnumber the live ones this many times

_CRC = struct.Struct("<I")
_HEAD = struct.Struct("<IQI")  # length, offset, key_len: the start of what the CRC covers
_FRAME = struct.Struct("<IIQI")  # crc + _HEAD
FRAME_OVERHEAD = _FRAME.size  # 20
_BODY_MIN = _HEAD.size - 4  # offset + key_len: the least `length` can be
_COMMIT = struct.Struct("<IIQIHH")  # crc, length, next_offset, partition, group_len, topic_len
_COMMIT_BODY_MIN = _COMMIT.size - 8
_SYNC = getattr(os, "fdatasync", os.fsync)  # appends: the data and the new size, no mtime


class Segment:
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


class Partition:
    """One partition: its files (owned by the writer thread) and what Trio serves from (the cache, the ends)."""

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
        self.segments: list[Segment] = []
        self.end = 0  # durable end: every offset below is fsynced and fetchable
        self.next_offset = 0  # the offset the next produced record gets (>= end)
        self.cache: list[BusRecord] = []  # records [end - (len(cache) - head), end)
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


# What a write hands the Trio thread to apply, in order: a sparse-index entry of the last
# segment, (record offset, byte position), or a new segment.
WriteEvent = tuple[int, int] | Segment
Written = tuple[list[WriteEvent], int, int]  # (events, bytes of records, fsyncs made)


class SegmentLog:
    """The files of one bus directory: opened (and recovered) once, then appended to by the writer threads."""

    def __init__(self, directory: Path, topics: dict[str, int], segment_bytes: int) -> None:
        self.directory = directory
        self.topics = topics
        self.segment_bytes = segment_bytes
        self.parts: dict[tuple[str, int], Partition] = {}
        self._lock_fd = -1
        # Owned by the commit writer thread while the bus runs.
        self._offsets_fd = -1
        self._offsets_live: dict[tuple[str, str, int], int] = {}
        self._offsets_entries = 0

    def open(self) -> dict[tuple[str, int], Partition]:
        """Take the directory's lock, recover every partition and the committed offsets; the partitions."""
        root = self.directory
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = os.open(root / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise BusError(f"{root} is in use by another EmbeddedBus") from None
        try:
            self._open_files()
        except BaseException:
            self.close()
            raise
        return self.parts

    def _open_files(self) -> None:
        root = self.directory
        fmt = root / "FORMAT"
        if fmt.exists():
            if fmt.read_bytes() != FORMAT:
                raise BusError(f"{fmt}: not {FORMAT.decode().strip()!r}")
        else:
            write_atomically(fmt, FORMAT)
        logs = root / "logs"
        if not logs.exists():
            logs.mkdir(mode=0o700)
            fsync_dir(root)
        for name in os.listdir(logs):
            topic, _, number = name.rpartition("-")
            if topic in self.topics and number.isdigit() and int(number) >= self.topics[topic]:
                raise ValueError(
                    f"{logs / name} exists but topic {topic!r} is declared with {self.topics[topic]} partitions: "
                    "partitions cannot be removed"
                )
        self.parts = {}
        for topic, count in self.topics.items():
            for index in range(count):
                part = Partition(topic, index, logs / f"{topic}-{index}")
                self._recover_partition(part)
                self.parts[(topic, index)] = part
        self._recover_offsets()

    def _recover_partition(self, part: Partition) -> None:
        if not part.path.exists():
            part.path.mkdir(mode=0o700)
            fsync_dir(part.path.parent)
        bases = sorted(int(name[:-4]) for name in os.listdir(part.path) if name.endswith(".log") and name[:-4].isdigit())
        if not bases:
            bases = [0]
            os.close(os.open(segment_path(part.path, 0), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            fsync_dir(part.path)
        last = bases[-1]
        path = segment_path(part.path, last)
        index, end, valid = scan_segment(path, last)
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
        part.segments = [Segment(base, segment_path(part.path, base)) for base in bases[:-1]]
        part.segments.append(Segment(last, path, index))
        part.end = part.next_offset = end
        part.cache, part.head, part.cache_bytes = [], 0, 0

    def _recover_offsets(self) -> None:
        path = self.directory / "offsets.log"
        tmp = path.with_name("offsets.log.tmp")
        if tmp.exists():
            tmp.unlink()  # a compaction that did not reach its rename
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            fsync_dir(self.directory)
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
            part = self.parts.get((topic, number))
            if part is None:
                continue  # a topic not declared now: kept in the file, not served
            if offset > part.end:
                log.warning("%s/%d: group %r committed %d beyond the end %d", topic, number, group, offset, part.end)
                offset = part.end
            part.commits[group] = offset

    def write_partition(self, part: Partition, records: list[BusRecord]) -> Written:
        """Append records to the partition's last segment (rolling as needed) and sync.

        Returns (events for the Trio thread to apply: sparse-index entries and new
        segments, in order; bytes of records; fsyncs made).
        """
        events: list[WriteEvent] = []
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
                write_all(part.fd, buf)
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
            size = FRAME_OVERHEAD + len(key) + len(value)
            part.unindexed += size
            total += size
        write_all(part.fd, buf)
        part.active_size += len(buf)
        _SYNC(part.fd)
        return events, total, fsyncs + 1

    def _roll(self, part: Partition, base: int, events: list[WriteEvent]) -> int:
        """Seal the last segment (fsync it first) and start a new one at `base`."""
        _SYNC(part.fd)
        os.close(part.fd)
        part.fd = -1
        path = segment_path(part.path, base)
        part.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fsync_dir(part.path)
        part.active_size = 0
        part.unindexed = INDEX_INTERVAL_BYTES
        events.append(Segment(base, path, (array("q"), array("q"))))
        return 2

    def write_commits(self, items: list[tuple[str, Partition, int]]) -> int:
        """Append the commits to offsets.log and sync (compacting it when mostly dead); returns the fsyncs made."""
        buf = bytearray()
        live = self._offsets_live
        for group, part, offset in items:
            buf += encode_commit(group, part.topic, part.number, offset)
            live[(group, part.topic, part.number)] = offset
        write_all(self._offsets_fd, buf)
        _SYNC(self._offsets_fd)
        self._offsets_entries += len(items)
        if self._offsets_entries > max(COMPACT_MIN_ENTRIES, COMPACT_RATIO * len(live)):
            return 1 + self._compact_offsets()
        return 1

    def _compact_offsets(self) -> int:
        """Rewrite offsets.log with one entry per (group, topic, partition)."""
        path = self.directory / "offsets.log"
        data = b"".join(encode_commit(g, t, n, offset) for (g, t, n), offset in self._offsets_live.items())
        write_atomically(path, data)
        os.close(self._offsets_fd)
        self._offsets_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._offsets_entries = len(self._offsets_live)
        return 2

    def close(self) -> None:
        """Close every file (closing the lock's releases the directory)."""
        for part in self.parts.values():
            if part.fd >= 0:
                os.close(part.fd)
                part.fd = -1
        for name in ("_offsets_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)  # closing the lock's fd releases the flock
                setattr(self, name, -1)


segment_base = lambda segment: segment.base  # noqa: E731 - bisect key


def segment_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}.log"


def encode_commit(group: str, topic: str, partition: int, offset: int) -> bytes:
    g = group.encode()
    t = topic.encode()
    body = _COMMIT.pack(0, _COMMIT_BODY_MIN + len(g) + len(t), offset, partition, len(g), len(t))[4:] + g + t
    return _CRC.pack(zlib.crc32(body)) + body


def delete_files(paths: list[Path]) -> None:
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
            fsync_dir(directory)
        except OSError as exc:
            log.warning("retention could not fsync %s: %r", directory, exc)


def scan_segment(path: Path, base: int) -> tuple[tuple[array[int], array[int]], int, int]:
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
    while pos + FRAME_OVERHEAD <= size:
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


def read_frame(f: BinaryIO, path: Path) -> tuple[int, bytes, bytes] | None:
    head = f.read(FRAME_OVERHEAD)
    if not head:
        return None
    if len(head) < FRAME_OVERHEAD:
        raise BusCorrupted(f"{path}: truncated record header")
    crc, length, offset, key_len = _FRAME.unpack(head)
    if length < _BODY_MIN or key_len > length - _BODY_MIN:
        raise BusCorrupted(f"{path}: bad record length at offset {offset}")
    rest = f.read(length - _BODY_MIN)
    if len(rest) < length - _BODY_MIN or zlib.crc32(rest, zlib.crc32(memoryview(head)[4:])) != crc:
        raise BusCorrupted(f"{path}: bad record at offset {offset}")
    return offset, rest[:key_len], rest[key_len:]


def read_records(segments: list[Segment], start: int, count: int) -> list[tuple[int, bytes, bytes]]:
    """Read `count` durable records from `start` on, through the segments' sparse indexes."""
    out: list[tuple[int, bytes, bytes]] = []
    at = start
    for i, segment in enumerate(segments):
        next_base = segments[i + 1].base if i + 1 < len(segments) else None
        if not segment.indexed:
            index, end, valid = scan_segment(segment.path, segment.base)
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
                frame = read_frame(f, segment.path)
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
