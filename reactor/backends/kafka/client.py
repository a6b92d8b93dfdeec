"""The asyncio side of the Kafka backend: the coroutines that await aiokafka, run only through the bridge.

Every function here is called on the trio-asyncio loop of reactor/asyncio_bridge.py
(`bridge.call(lambda: client.produce(...))`), never from Trio code directly; this module
imports neither asyncio nor Trio. The clients it makes:

    producer   one per backend: idempotent, acks=all; partitions chosen by the caller (murmur2)
    meta       one per backend: a groupless consumer asking for end offsets
    reader     one per (group, topic, partition) fetched: a groupless consumer assigned that
               one partition, seeking only when a fetch does not continue the previous one
    committer  one per group with no member here: group_id set, partitions assigned by hand and
               paused (commits of an empty group, and every `committed` question)
    member     one per `assignments` stream: subscribed with the group, its partitions paused
               (it only holds the membership; the readers fetch)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError as KafkaError  # type: ignore[import-untyped]  # bus.py reads it here (no aiokafka there)

from reactor.ports import BusRecord

aiokafka_log = logging.getLogger("aiokafka")
TOPIC_ALREADY_EXISTS = 36  # Kafka's error code
CLIENT_ID = "herald"
Tp = tuple[str, int]


class KafkaSetupError(Exception):
    """The cluster cannot serve the configured topics (a partition count differs, creation refused)."""


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _tp(topic: str, partition: int) -> Any:
    return TopicPartition(topic, partition)


async def ensure_topics(bootstrap: str, topics: Mapping[str, int], replication: int | None, request_timeout_ms: int) -> int:
    """Create the topics that do not exist (partition counts as given); returns the replication factor used
    (`replication`, or min(3, brokers) when None). A topic that exists must have its partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID, request_timeout_ms=request_timeout_ms)
    quiet = _DropAll()
    aiokafka_log.addFilter(quiet)  # the first contact: failing, it is the start error (one line), not a log line before it
    try:
        await admin.start()
    finally:
        aiokafka_log.removeFilter(quiet)
    try:
        if replication is None:
            brokers = (await admin.describe_cluster())["brokers"]
            replication = max(1, min(3, len(brokers)))
        if topics:
            response = await admin.create_topics([NewTopic(name, count, replication) for name, count in topics.items()])
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    message = entry[2] if len(entry) > 2 else ""
                    raise KafkaSetupError(f"creating topic {name!r} failed: Kafka error {code} {message}")
            described = await admin.describe_topics(list(topics))
            for topic in described:
                name, count = topic["topic"], len(topic["partitions"])
                if topic["error_code"] == 0 and count != topics[name]:
                    raise KafkaSetupError(f"topic {name!r} has {count} partitions in Kafka, {topics[name]} configured: "
                                          f"make them equal (kafka-topics.sh --alter --partitions, or the setting)")
        return replication
    finally:
        await admin.close()


async def topics_led(bootstrap: str, names: Sequence[str], request_timeout_ms: int) -> bool:
    """Whether Kafka knows every topic named and each of its partitions has a leader. A topic just created reaches
    the brokers' metadata a little later; a consumer subscribing before then is assigned its partitions only at its
    next metadata refresh (minutes later)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    return all(t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described)


async def start_producer(bootstrap: str, linger_ms: int, request_timeout_ms: int) -> Any:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, acks="all", enable_idempotence=True,
                                linger_ms=linger_ms, request_timeout_ms=request_timeout_ms)
    await producer.start()
    return producer


async def produce(producer: Any, items: Sequence[tuple[str, int, bytes, bytes]]) -> list[tuple[int, int]]:
    """Send (topic, partition, key, value) records in order; (partition, offset) of each once all are acknowledged."""
    pending = [await producer.send(topic, value, key=key, partition=partition) for topic, partition, key, value in items]
    acks: list[tuple[int, int]] = []
    for future in pending:
        metadata = await future
        acks.append((int(metadata.partition), int(metadata.offset)))
    return acks


async def start_consumer(bootstrap: str, group: str | None, request_timeout_ms: int, **options: Any) -> Any:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=request_timeout_ms, **options)
    await consumer.start()
    return consumer


async def start_reader(bootstrap: str, topic: str, partition: int, request_timeout_ms: int) -> Any:
    consumer = await start_consumer(bootstrap, None, request_timeout_ms, fetch_max_wait_ms=200)
    consumer.assign([_tp(topic, partition)])
    return consumer


async def read(reader: Any, name: str, topic: str, partition: int, offset: int, seek: bool, max_records: int) -> list[BusRecord]:
    """At least one record of the Kafka topic `name` from `offset` on, at most `max_records` (as records of `topic`): waits for one."""
    tp = _tp(name, partition)
    if seek:
        reader.seek(tp, offset)
    while True:
        got = await reader.getmany(tp, timeout_ms=1000, max_records=max_records)
        records = got.get(tp)
        if records:
            return [BusRecord(topic, partition, r.offset, b"" if r.key is None else r.key, b"" if r.value is None else r.value)
                    for r in records]


async def start_committer(bootstrap: str, group: str, partitions: Iterable[Tp], request_timeout_ms: int) -> Any:
    consumer = await start_consumer(bootstrap, group, request_timeout_ms)
    tps = [_tp(topic, partition) for topic, partition in partitions]
    consumer.assign(tps)
    consumer.pause(*tps)
    return consumer


async def commit(consumer: Any, topic: str, partition: int, next_offset: int) -> None:
    await consumer.commit({_tp(topic, partition): next_offset})


async def committed(consumer: Any, topic: str, partition: int) -> int:
    offset = await consumer.committed(_tp(topic, partition))
    return 0 if offset is None or offset < 0 else int(offset)


async def end_offset(consumer: Any, topic: str, partition: int) -> int:
    tp = _tp(topic, partition)
    ends = await consumer.end_offsets([tp])
    return int(ends[tp])


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands each change to the member's Trio side and, for a revocation, waits until it was handled."""

    def __init__(self, consumer: Any, revoked: Callable[[frozenset[Tp]], Awaitable[None]],
                 assigned: Callable[[frozenset[Tp]], Awaitable[None]]) -> None:
        self.consumer = consumer
        self.revoked = revoked
        self.assigned = assigned

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        partitions = frozenset((tp.topic, tp.partition) for tp in revoked)
        if partitions:
            await self.revoked(partitions)

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        tps = list(assigned)
        if tps:
            self.consumer.pause(*tps)  # the member holds the partitions; the readers fetch them
            await self.assigned(frozenset((tp.topic, tp.partition) for tp in tps))


async def start_member(bootstrap: str, group: str, topics: Sequence[str], request_timeout_ms: int,
                       revoked: Callable[[frozenset[Tp]], Awaitable[None]], assigned: Callable[[frozenset[Tp]], Awaitable[None]],
                       heartbeat_ms: int, session_timeout_ms: int) -> Any:
    consumer = await start_consumer(bootstrap, group, request_timeout_ms, heartbeat_interval_ms=heartbeat_ms,
                                    session_timeout_ms=session_timeout_ms)
    consumer.subscribe(list(topics), listener=_Listener(consumer, revoked, assigned))
    return consumer


async def hold_membership(member: Any) -> None:
    """Poll forever (its partitions are paused: nothing comes): aiokafka leaves the group of a member that stops polling."""
    while True:
        await member.getmany(timeout_ms=1000)


async def stop(client: Any) -> None:
    """Stop a producer or a consumer (a member leaves its group)."""
    await client.stop()
