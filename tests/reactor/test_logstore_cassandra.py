"""The Cassandra log store beside its conformance suite: its URL, and what it does while Cassandra is down.

The suite (tests/conformance/suites/logstore.py) runs on the session's Cassandra; these tests
stop a node of their own: a node that stops answering (SIGSTOP: the silent server that froze
Trio for 2 s in a blocking connect) and a node killed and started again. Each call fails with
BackendUnavailable, the Trio loop keeps running meanwhile, and once the node is back the same
store answers again, without reopening, with what it had.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from protocol.lifecycle import Status
from reactor.backends import BackendUnavailable, check_url
from reactor.backends.cassandra import CassandraLogStore, parse_url
from tests.conformance.backends import may_skip
from tests.conformance.suites.logstore import T0, ev, nid, record
from tests.helpers import all_channels, http, running_node, wait_final
from tests.servers import CassandraServer, free_port, stopped


def test_the_url_says_where_and_how() -> None:
    url = parse_url("cassandra://10.0.0.1:9142,db2/herald?replication=dc1:3,dc2:2&consistency=local_one&local_dc=dc1&ttl_days=30")
    assert url.hosts == (("10.0.0.1", 9142), ("db2", 9042))
    assert (url.keyspace, url.consistency, url.serial_consistency, url.local_dc, url.ttl_days) == ("herald", "LOCAL_ONE", "LOCAL_SERIAL", "dc1", 30)
    assert url.replication_cql() == "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
    simple = parse_url("cassandra://h:9042/k")
    assert (simple.consistency, simple.replication_cql()) == ("LOCAL_QUORUM", "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    assert parse_url("cassandra://h/k?consistency=quorum").serial_consistency == "SERIAL"
    assert check_url("cassandra://h:9042/k") == "cassandra://h:9042/k"


def test_the_configuration_refuses_a_bad_cassandra_url_naming_the_setting() -> None:
    from actors.config import ConfigError, load_config

    assert load_config(env={"HERALD_LOGSTORE": "cassandra://db1:9042,db2:9042/herald?replication=3"}).logstore.startswith("cassandra://")
    with pytest.raises(ConfigError, match="HERALD_LOGSTORE: consistency must be one of"):
        load_config(env={"HERALD_LOGSTORE": "cassandra://db1/herald?consistency=lots"})


@pytest.mark.parametrize("bad", [
    "cassandra://h:port/k", "cassandra://h:9042/", "cassandra://h:9042/k-1", "cassandra://h:9042/k; DROP",
    "cassandra://h:70000/k", "cassandra://u@h/k", "cassandra://h/k?consistency=most", "cassandra://h/k?replication=0",
    "cassandra://h/k?replication=dc1", "cassandra://h/k?replication=dc'1:3", "cassandra://h/k?ttl_days=0",
    "cassandra://h/k?timeout_s=x", "cassandra://h/k?color=blue",
])
def test_a_bad_url_is_refused_with_what_is_wrong(bad: str) -> None:
    with pytest.raises(ValueError, match=r"cassandra|consistency|replication|ttl_days|port|options"):
        parse_url(bad)


async def test_no_cassandra_there_is_backend_unavailable() -> None:
    store = CassandraLogStore(parse_url(f"cassandra://127.0.0.1:{free_port()}/nothing?timeout_s=2"))
    with trio.fail_after(60), pytest.raises(BackendUnavailable, match="cannot connect"):
        await store.open()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraServer]:
    """A Cassandra of this module's own (a test stops it, kills it and starts it again)."""
    try:
        server = CassandraServer(tmp_path_factory.mktemp("cassandra"), durable_schema=True)  # killed and started again
        server.start()
    except RuntimeError as exc:
        if may_skip("cassandra"):
            pytest.skip(f"Cassandra unavailable: {exc}")
        raise
    try:
        yield server
    finally:
        server.kill()


async def test_a_node_keeps_its_log_store_on_cassandra(node: CassandraServer, tmp_path: Path) -> None:
    """The whole node with `logstore = cassandra://...`: a notification's statuses, timeline, history and inbox are there."""
    async with running_node(tmp_path, logstore=f"{node.url}/node_e2e") as herald, http(herald) as client:
        response = await client.post("/v1/notifications", json={**all_channels("cass-user"), "priority": "high"})
        assert response.status_code == 202, response.text
        nid = response.json()["notification_id"]
        body = await wait_final(client, nid, 30)
        assert {c: v["status"] for c, v in body["channels"].items()} == {
            "email": "delivered", "sms": "delivered", "push": "delivered", "web": "sent",
        }
        history = (await client.get("/v1/users/cass-user/notifications")).json()
        assert {row["channel"] for row in history["items"] if row["notification_id"] == nid} == {"email", "sms", "push", "web"}
        inbox = (await client.get("/v1/users/cass-user/inbox")).json()
        assert [row["id"] for row in inbox["items"]] == [nid]


class Ticker:
    """Counts how often a Trio task got to run: a loop blocked by a call would count nothing meanwhile."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await trio.sleep(0.01)
            self.ticks += 1


async def unavailable_while_ticking(call: Any) -> tuple[BackendUnavailable, int, float]:
    """Run a call that must fail with BackendUnavailable; its error, how often another task ran meanwhile, how long it took."""
    ticker = Ticker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        started = time.monotonic()
        with trio.fail_after(60), pytest.raises(BackendUnavailable) as raised:
            await call()
        took = time.monotonic() - started
        nursery.cancel_scope.cancel()
    return raised.value, ticker.ticks, took


async def eventually(call: Any, seconds: float = 60.0) -> Any:
    """The call's result once it stops failing with BackendUnavailable (the driver reconnects in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            await trio.sleep(0.2)


async def test_cassandra_down_fails_fast_and_the_store_recovers(node: CassandraServer) -> None:
    """A silent node: calls fail after the URL's timeout, Trio runs meanwhile; it answers again: so do they.
    A killed node: calls fail at once; started again on its data: the same store answers with what it had."""
    store = CassandraLogStore(parse_url(f"{node.url}/downtime?timeout_s=1"))
    await store.open()
    try:
        n, m = nid(T0), nid(T0, 1)
        await record(store, [ev(n, Status.QUEUED, T0), ev(n, Status.SENT, T0 + 1)])

        os.kill(node.pid, signal.SIGSTOP)
        try:
            await stopped(node.pid)
            error, ticks, took = await unavailable_while_ticking(lambda: store.statuses(n))
            print(f"silent node: {type(error.__cause__).__name__} after {took:.2f}s, {ticks} ticks of the Trio loop meanwhile")
            assert ticks > 10, "the Trio loop did not run while the query waited"
            assert "downtime" in str(error)
            silent = CassandraLogStore(parse_url(f"{node.url}/downtime?timeout_s=1"))
            error, ticks, took = await unavailable_while_ticking(silent.open)  # connect() runs in a thread: Trio runs on
            print(f"open against a silent node: {took:.2f}s, {ticks} ticks meanwhile")
            assert ticks > 10
        finally:
            os.kill(node.pid, signal.SIGCONT)
        assert [r.status for r in await eventually(lambda: store.statuses(n))] == ["sent"]

        node.kill()
        error, _, took = await unavailable_while_ticking(lambda: record(store, [ev(m, Status.QUEUED, T0)]))
        print(f"killed node: {type(error.__cause__).__name__} after {took:.2f}s")
        await trio.to_thread.run_sync(node.start)
        started = time.monotonic()
        assert [r.status for r in await eventually(lambda: store.statuses(n))] == ["sent"]
        print(f"started again in {node.start_s:.1f}s; the store answered {time.monotonic() - started:.2f}s later")
        await eventually(lambda: record(store, [ev(n, Status.DELIVERED, T0 + 2), ev(m, Status.QUEUED, T0)]))
        assert [r.status for r in await store.statuses(n)] == ["delivered"]
        assert [r.status for r in await store.statuses(m)] == ["queued"]
        assert await store.daily_counts("2024-01-01", "email") == {"sent": 1, "delivered": 1, "failed": 0}
    finally:
        await store.close()
