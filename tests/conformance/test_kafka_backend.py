"""The Kafka backend beyond the Bus suite: its URL, what it refuses at open, commits while a member holds the group.

Runs on the session's Kafka (tests/servers.py kafka_server, started once by the conformance
fixtures on first use), skipped like the suite when HERALD_CONFORMANCE_BACKENDS leaves kafka out.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from reactor.backends import BackendSettings, BackendUnavailable, check_url, open_backends
from reactor.backends.kafka import KafkaOptions, KafkaSetupError, parse_url
from reactor.ports import Assignment
from tests.conformance.backends import Servers, selected
from tests.servers import free_port


@pytest.mark.parametrize(("url", "options"), [
    ("kafka://127.0.0.1:9092", KafkaOptions("127.0.0.1:9092")),
    ("kafka://a:1,b.example:9093?prefix=herald.&replication=3&linger_ms=5",
     KafkaOptions("a:1,b.example:9093", prefix="herald.", replication=3, linger_ms=5)),
    ("kafka://[::1]:9092?heartbeat_ms=500&session_timeout_ms=6000&request_timeout_ms=1000",
     KafkaOptions("[::1]:9092", heartbeat_ms=500, session_timeout_ms=6000, request_timeout_ms=1000)),
])
def test_a_kafka_url_gives_its_options(url: str, options: KafkaOptions) -> None:
    assert check_url(url) == url
    assert parse_url(url) == options


@pytest.mark.parametrize(("url", "says"), [
    ("kafka://", "needs a location"),
    ("kafka://localhost", "not host:port"),
    ("kafka://h:0", "not host:port"),
    ("kafka://h:1,", "not host:port"),
    ("kafka://h:1?replication=0", "replication must be an integer >= 1"),
    ("kafka://h:1?replication=x", "replication must be an integer"),
    ("kafka://h:1?prefix=a/b", "prefix must be"),
    ("kafka://h:1?acks=1", "has no option 'acks'"),
    ("kafka://h:1?linger_ms=1&linger_ms=2", "given twice"),
])
def test_a_bad_kafka_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_url(url)
        parse_url(url)


def _settings(url: str, directory: Path, topics: dict[str, int]) -> BackendSettings:
    return BackendSettings({"bus": url}, directory, topics)


async def test_an_unreachable_kafka_is_backend_unavailable(tmp_path: Path) -> None:
    url = f"kafka://127.0.0.1:{free_port()}?request_timeout_ms=2000"
    with trio.fail_after(60):
        with pytest.raises(BackendUnavailable, match="cannot be reached"):
            async with open_backends(_settings(url, tmp_path, {"t": 1}), ["bus"]):
                pass


async def test_kafka_serves_the_bus_only(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="serves the bus only"):
        async with open_backends(BackendSettings({"bus": "kafka://h:1", "state": "kafka://h:1"}, tmp_path, {}), ["bus", "state"]):
            pass


@pytest.fixture
def kafka(conformance_servers: Servers) -> Any:
    if "kafka" not in {b.name for b in selected()}:
        pytest.skip("HERALD_CONFORMANCE_BACKENDS leaves kafka out")
    return conformance_servers.get("kafka")


@asynccontextmanager
async def kafka_bus(kafka: Any, directory: Path, topics: dict[str, int], prefix: str, **options: str) -> AsyncIterator[Any]:
    query = "&".join([f"prefix={prefix}", *(f"{k}={v}" for k, v in options.items())])
    async with open_backends(_settings(f"{kafka.url}?{query}", directory, topics), ["bus"]) as backends:
        yield backends.bus


def _prefix() -> str:
    return f"kb{uuid.uuid4().hex[:10]}."


async def test_an_existing_topic_with_another_partition_count_is_refused(kafka: Any, tmp_path: Path, clock: Any) -> None:
    clock.rate = 1.0
    prefix = _prefix()
    async with kafka_bus(kafka, tmp_path, {"t": 4}, prefix) as bus:
        assert bus.partitions("t") == 4
    with pytest.raises(KafkaSetupError, match=f"topic '{prefix}t' has 4 partitions in Kafka, 2 configured"):
        async with kafka_bus(kafka, tmp_path, {"t": 2}, prefix):
            pass


async def test_a_replication_factor_the_cluster_cannot_give_is_refused(kafka: Any, tmp_path: Path, clock: Any) -> None:
    clock.rate = 1.0
    with pytest.raises(KafkaSetupError, match="creating topic .* failed"):
        async with kafka_bus(kafka, tmp_path, {"t": 1}, _prefix(), replication="2"):  # one broker
            pass


async def test_a_member_of_a_group_commits_while_it_holds_the_partitions(kafka: Any, tmp_path: Path, clock: Any) -> None:
    """Kafka takes a commit of a group with members only from a member: the consumer commits while its member
    holds the partitions (the Bus suite commits in groups nobody joined)."""
    clock.rate = 1.0
    async with kafka_bus(kafka, tmp_path, {"u": 1, "t": 2}, _prefix()) as bus:
        acks = await bus.produce([("u", b"k", b"%d" % i) for i in range(5)])
        async with aclosing(bus.assignments("g", ["u", "t"])) as changes:
            with trio.fail_after(30):
                first = await changes.__anext__()
            assert first == Assignment(assigned=frozenset({("u", 0), ("t", 0), ("t", 1)}), revoked=frozenset())
            records = await bus.fetch("g", "u", 0, await bus.committed("g", "u", 0), 3)
            await bus.commit("g", "u", 0, records[-1].offset + 1)
            assert await bus.committed("g", "u", 0) == records[-1].offset + 1
            assert await bus.end_offset("u", 0) == acks[-1][1] + 1  # Kafka's end offsets are right: the lag figure
        # the member left: the group is empty, and a commit goes in as an empty group's
        await bus.commit("g", "u", 0, acks[-1][1] + 1)
        assert await bus.committed("g", "u", 0) == acks[-1][1] + 1


async def test_a_node_on_the_kafka_bus_delivers_every_channel(kafka: Any, tmp_path: Path, clock: Any) -> None:
    """The whole node (api, consumers of every channel's topics, retries) with its bus on Kafka: each channel's
    group joins, its partitions are assigned, the notification is delivered and the offsets committed (lag 0)."""
    from tests.helpers import all_channels, http, running_node, wait_final

    clock.rate = 1.0
    body = all_channels("kafka-user")
    body["channels"] = ["email", "sms", "push"]
    del body["content"]["web"]
    async with running_node(tmp_path, bus=f"{kafka.url}?prefix={_prefix()}") as herald, http(herald) as api:
        with trio.fail_after(60):
            response = await api.post("/v1/notifications", json=body)
            assert response.status_code == 202, response.text
            final = await wait_final(api, response.json()["notification_id"], 45)
            assert {channel: state["status"] for channel, state in final["channels"].items()} == {
                "email": "delivered", "sms": "delivered", "push": "delivered"}
            while True:  # the consumers commit what they finished: no lag left on the channels' topics
                metrics = (await api.get("/metrics")).text
                lags = [line for line in metrics.splitlines() if line.startswith("herald_bus_consumer_lag_records{")]
                if lags and all(line.endswith(" 0.0") for line in lags):
                    break
                await trio.sleep(0.1)


async def test_a_member_that_fails_ends_its_stream_not_the_bus(kafka: Any, tmp_path: Path, clock: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The member's poll failing (aiokafka raising) is that member's end: its stream raises the error (the
    consumer group's supervisor restarts it); the bus, and its other users, go on."""
    from reactor.backends.kafka import client

    clock.rate = 1.0

    async def failing(member: Any) -> None:
        await member.getmany(timeout_ms=100)
        raise ConnectionError("the member's poll failed")

    monkeypatch.setattr(client, "hold_membership", failing)
    async with kafka_bus(kafka, tmp_path, {"u": 1}, _prefix()) as bus:
        with trio.fail_after(30), pytest.raises(ConnectionError, match="the member's poll failed"):
            async with aclosing(bus.assignments("g", ["u"])) as changes:
                async for _ in changes:
                    pass
        [(partition, offset)] = await bus.produce([("u", b"k", b"after")])
        [record] = await bus.fetch("g", "u", partition, offset, 1)
        assert record.value == b"after"
