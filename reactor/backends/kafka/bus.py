"""The Kafka Bus: the Bus port (reactor/ports.py) on Apache Kafka, the Trio side.

Every Kafka call goes through the asyncio bridge (reactor/asyncio_bridge.py) to a coroutine of
client.py; concurrent calls share its crossings. Topic and group names get the URL's `prefix`.

    produce     the partition is murmur2(key) % partitions (reactor/partitioner.py, as the
                embedded bus and Kafka's default partitioner), passed explicitly; one
                idempotent acks=all producer; returns once every record is acknowledged
    fetch       a reader per (group, topic, partition), continuing where its last fetch ended
                or seeking; at least one record, at most max_records
    commit      through this process's member of the group that holds the partition (Kafka
                takes a member's commits only from it), else as a commit of an empty group
    committed   the group's committed offset (0 when none)
    assignments a member of the Kafka consumer group (eager rebalancing): each revocation is
                yielded and the rebalance waits until the stream is asked for its next change
                (the member finished and committed its in-flight work), then the new share is
                yielded; closing the stream leaves the group
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import trio

from reactor.asyncio_bridge import AsyncioBridge, BridgeClosed
from reactor.partitioner import kafka_partition
from reactor.ports import AppendUncertain, Assignment, BusRecord

from . import client
from .client import Tp

log = logging.getLogger("herald.bus.kafka")

# murmur2 in Python costs ~4 us a key; a node produces for the same users again and again
_partition = functools.lru_cache(maxsize=65_536)(kafka_partition)


class UnknownTopic(KeyError, ValueError):
    """The topic was not declared (settings.topics) when the bus was opened."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown topic"


@dataclass(frozen=True)
class KafkaOptions:
    """What the bus URL says (reactor/backends/kafka/__init__.py parses it)."""

    bootstrap: str  # host:port[,host:port]
    prefix: str = ""  # put before every topic and group name: several deployments (or test runs) on one cluster
    replication: int | None = None  # replication factor of created topics; None: min(3, brokers)
    linger_ms: int = 0  # the producer waits this long to fill a batch
    request_timeout_ms: int = 30_000
    heartbeat_ms: int = 1_000  # a member hears of a rebalance within this
    session_timeout_ms: int = 10_000  # a member that stopped heartbeating is out of the group after this


@dataclass(eq=False)
class _Reader:
    lock: trio.Lock = field(default_factory=trio.Lock)
    consumer: Any = None
    next: int | None = None  # where the consumer's position is, when known


@dataclass(eq=False)
class _Member:
    consumer: Any = None
    owned: set[Tp] = field(default_factory=set)  # prefixed names
    handled: trio.Event | None = None  # set when the revocation in hand was handled
    holder: trio.CancelScope = field(default_factory=trio.CancelScope)
    closing: bool = False  # leaving the group: a revocation aiokafka reports now is not handed over
    failure: Exception | None = None  # why its membership ended (the stream raises it)


class KafkaBus:
    """The Bus port on Kafka (open it with reactor.backends.kafka.open_backends)."""

    def __init__(self, bridge: AsyncioBridge, nursery: trio.Nursery, options: KafkaOptions, topics: Mapping[str, int]) -> None:
        for topic, count in topics.items():
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"topic {topic!r}: partition count must be an int >= 1, got {count!r}")
        self.topics = dict(topics)
        self.options = options
        self._bridge = bridge
        self._nursery = nursery
        self._producer: Any = None
        self._meta: Any = None
        self._readers: dict[tuple[str, str, int], _Reader] = {}
        self._committers: dict[str, Any] = {}
        self._committer_lock = trio.Lock()
        self._members: dict[str, list[_Member]] = {}
        self.replication = 0

    def _call(self, make: Callable[[], Any]) -> Any:
        return self._bridge.call(make)

    async def open(self) -> None:
        """Create the missing topics, start the producer and the metadata consumer."""
        o = self.options
        named = {self._topic(t): n for t, n in self.topics.items()}
        self.replication = await self._call(lambda: client.ensure_topics(o.bootstrap, named, o.replication, o.request_timeout_ms))
        # Kafka polled until it knows the topics just created: members subscribing then are assigned their partitions at
        # once, not at their next metadata refresh (minutes). Bounded by request_timeout_ms; a server cannot signal it.
        with trio.move_on_after(o.request_timeout_ms / 1000):
            for _ in itertools.count():
                if await self._call(lambda: client.topics_led(o.bootstrap, list(named), o.request_timeout_ms)):
                    break
                await trio.sleep(0.05)
        self._producer = await self._call(lambda: client.start_producer(o.bootstrap, o.linger_ms, o.request_timeout_ms))
        self._meta = await self._call(lambda: client.start_consumer(o.bootstrap, None, o.request_timeout_ms))

    async def close(self) -> None:
        """Stop every client (members leave their groups); called shielded."""
        clients = [r.consumer for r in self._readers.values() if r.consumer is not None]
        clients += list(self._committers.values()) + [self._meta, self._producer]
        self._readers.clear()
        self._committers.clear()

        async def stop(one: Any) -> None:
            try:
                await self._call(lambda: client.stop(one))
            except BridgeClosed:
                pass  # a crash (the handle was cancelled): the loop is gone, its connections with it
            except Exception as exc:  # closing: say it, go on with the others
                log.warning("stopping a Kafka client failed: %r", exc)

        async with trio.open_nursery() as nursery:
            for one in clients:
                if one is not None:
                    nursery.start_soon(stop, one)

    def _topic(self, topic: str) -> str:
        return self.options.prefix + topic

    def _group(self, group: str) -> str:
        if not group:
            raise ValueError("group must be a non-empty string")
        return self.options.prefix + group

    # -- the Bus port ----------------------------------------------------------------------

    def partitions(self, topic: str) -> int:
        try:
            return self.topics[topic]
        except KeyError:
            raise UnknownTopic(f"unknown topic {topic!r}; declared: {sorted(self.topics)}") from None

    def partition_for(self, topic: str, key: bytes) -> int:
        return _partition(key, self.partitions(topic))

    def _check(self, topic: str, partition: int) -> None:
        count = self.partitions(topic)
        if not 0 <= partition < count:
            raise ValueError(f"{topic} has partitions 0..{count - 1}, not {partition}")

    async def produce(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
        """Append records; (partition, offset) of each once Kafka acknowledged all (acks=all).

        If the caller is cancelled while waiting, its records may still be written.
        """
        targets: list[tuple[str, int, bytes, bytes]] = []
        prefix, counts = self.options.prefix, self.topics
        for topic, key, value in items:
            if type(key) is not bytes or type(value) is not bytes:
                if not isinstance(key, (bytes, bytearray, memoryview)) or not isinstance(value, (bytes, bytearray, memoryview)):
                    raise TypeError(f"key and value must be bytes, got {type(key).__name__}, {type(value).__name__}")
                key, value = bytes(key), bytes(value)
            count = counts.get(topic)
            if count is None:
                count = self.partitions(topic)  # raises UnknownTopic
            targets.append((prefix + topic, _partition(key, count), key, value))
        if not targets:
            await trio.lowlevel.checkpoint()
            return []
        producer = self._producer
        try:
            acks: list[tuple[int, int]] = await self._call(lambda: client.produce(producer, targets))
        except client.KafkaError as exc:  # the producer gave up on a batch (a timeout): it may have been written
            raise AppendUncertain(f"Kafka did not acknowledge the append: {exc!r}") from exc
        for (_, partition, _, _), (acked, _) in zip(targets, acks):
            if acked != partition:  # the producer was told the partition: anything else is a defect
                raise RuntimeError(f"Kafka acknowledged partition {acked} for a record sent to {partition}")
        return acks

    async def fetch(self, group: str, topic: str, partition: int, offset: int, max_records: int) -> list[BusRecord]:
        """Records from `offset` on (at most `max_records`, at least one): waits for one.

        An offset below the log start (deleted by retention) reads from the log start.
        """
        self._check(topic, partition)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        name, o = self._topic(topic), self.options
        key = (self._group(group), topic, partition)
        while True:
            reader = self._readers.setdefault(key, _Reader())
            async with reader.lock:
                if self._readers.get(key) is not reader:
                    continue  # dropped (its partition revoked) while this fetch waited for it
                if reader.consumer is None:
                    reader.consumer = await self._call(lambda: client.start_reader(o.bootstrap, name, partition, o.request_timeout_ms))
                consumer, seek = reader.consumer, reader.next != offset
                reader.next = None  # unknown until this read returns
                records: list[BusRecord] = await self._call(
                    lambda: client.read(consumer, name, topic, partition, offset, seek, max_records))
                reader.next = records[-1].offset + 1
                return records

    async def commit(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        self._check(topic, partition)
        if next_offset < 0:
            raise ValueError(f"{topic}/{partition}: cannot commit {next_offset}")
        name = self._group(group)
        tp = (self._topic(topic), partition)
        holder = next((m.consumer for m in self._members.get(name, []) if tp in m.owned and m.consumer is not None), None)
        consumer = holder if holder is not None else await self._committer(name)
        await self._call(lambda: client.commit(consumer, tp[0], partition, next_offset))

    async def committed(self, group: str, topic: str, partition: int) -> int:
        self._check(topic, partition)
        consumer = await self._committer(self._group(group))
        name = self._topic(topic)
        offset: int = await self._call(lambda: client.committed(consumer, name, partition))
        return offset

    async def end_offset(self, topic: str, partition: int) -> int:
        self._check(topic, partition)
        meta, name = self._meta, self._topic(topic)
        offset: int = await self._call(lambda: client.end_offset(meta, name, partition))
        return offset

    async def _drop_reader(self, key: tuple[str, str, int]) -> None:
        """Stop the reader of a (group, topic, partition), once no fetch uses it (a fetch later starts another)."""
        reader = self._readers.get(key)
        if reader is None:
            return
        async with reader.lock:
            if self._readers.get(key) is reader:
                del self._readers[key]
            consumer, reader.consumer, reader.next = reader.consumer, None, None
        if consumer is not None:
            try:
                await self._call(lambda: client.stop(consumer))
            except BridgeClosed:
                pass
            except Exception as exc:
                log.warning("stopping the reader of %s failed: %r", key, exc)

    async def _committer(self, group: str) -> Any:
        async with self._committer_lock:
            found = self._committers.get(group)
            if found is None:
                o = self.options
                every = [(self._topic(t), p) for t, n in self.topics.items() for p in range(n)]
                found = await self._call(lambda: client.start_committer(o.bootstrap, group, every, o.request_timeout_ms))
                self._committers[group] = found
            return found

    def assignments(self, group: str, topics: Sequence[str]) -> AsyncGenerator[Assignment, None]:
        """Join the group: yields each change of this member's partitions until the stream closes (it then leaves)."""
        for topic in topics:
            self.partitions(topic)  # raises UnknownTopic now, not at the first change
        return self._member(self._group(group), list(topics))

    async def _member(self, group: str, topics: list[str]) -> AsyncGenerator[Assignment, None]:
        changes_in, changes = trio.open_memory_channel[tuple[str, frozenset[Tp]]](math.inf)
        member = _Member()
        unprefix = len(self.options.prefix)
        bridge, o = self._bridge, self.options

        async def revoked(parts: frozenset[Tp]) -> None:  # Trio side, called by the rebalance listener
            if member.closing or member.failure is not None:
                return
            handled = member.handled = trio.Event()
            changes_in.send_nowait(("revoked", parts))
            await handled.wait()

        async def assigned(parts: frozenset[Tp]) -> None:
            if member.closing or member.failure is not None:
                return
            member.owned |= parts
            changes_in.send_nowait(("assigned", parts))

        async def hold(consumer: Any) -> None:
            with member.holder:
                try:
                    await bridge.call(lambda: client.hold_membership(consumer))
                except Exception as exc:  # the member's own failure, not the backend's: its stream raises it
                    member.failure = exc
                    changes_in.close()

        members = self._members.setdefault(group, [])
        members.append(member)
        try:
            named = [self._topic(t) for t in topics]
            member.consumer = await self._call(lambda: client.start_member(
                o.bootstrap, group, named, o.request_timeout_ms, lambda parts: bridge.to_trio(revoked, parts),
                lambda parts: bridge.to_trio(assigned, parts), o.heartbeat_ms, o.session_timeout_ms))
            self._nursery.start_soon(hold, member.consumer)
            async for kind, parts in changes:
                mine = frozenset((t[unprefix:], p) for t, p in parts)
                if kind == "revoked":
                    yield Assignment(assigned=frozenset(), revoked=mine)
                    member.owned -= parts
                    if member.handled is not None:
                        member.handled.set()
                    for topic, partition in mine:  # its readers go: the partition may never come back to this member
                        self._nursery.start_soon(self._drop_reader, (group, topic, partition))
                else:
                    yield Assignment(assigned=mine, revoked=frozenset())
            if member.failure is not None:
                raise member.failure
        finally:
            member.closing = True
            with trio.CancelScope(shield=True):
                member.holder.cancel()
                if member.handled is not None:
                    member.handled.set()
                members.remove(member)
                if not members:
                    self._members.pop(group, None)
                if member.consumer is not None:
                    consumer = member.consumer
                    try:
                        await self._call(lambda: client.stop(consumer))
                    except BridgeClosed:
                        pass
                    except Exception as exc:
                        log.warning("leaving the group %s failed: %r", group, exc)
