"""The Redis State and Broker beyond the conformance suites: Redis going away and coming back, several workers
sharing one bucket and one breaker, the URL, and the front end's 503 while Redis is down.

Each test that stops Redis runs a redis-server of its own (on a free port, restarted on the same one);
the others use one started for this module. Every wait is bounded (fail_after): a call that hangs fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from reactor.backends import BackendSettings, BackendUnavailable, check_url, open_backends
from reactor.backends.redis import RedisBroker, RedisSettings, RedisState, opened_client
from reactor.circuit_breaker import BreakerConfig
from reactor.ports import BrokerLost, PortUnavailable
from protocol.channels import Channel
from tests.helpers import http, running_node, wait_final, web_notification
from tests.servers import Endpoint, _stop, _wait_for_port, free_port, redis_server

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


class OwnRedis:
    """A redis-server of this test's own, which it may stop and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.process, 10, "redis-server")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@asynccontextmanager
async def redis_state(url: str) -> AsyncIterator[RedisState]:
    async with opened_client(url) as client:
        yield RedisState(client)


# -- Redis down ------------------------------------------------------------------------------------


async def test_a_state_call_fails_fast_while_redis_is_down_and_works_again_once_it_is_back(own_redis: OwnRedis) -> None:
    async with redis_state(f"{own_redis.url}?timeout_s=0.5") as state:
        await state.set("k", b"before")
        own_redis.stop()
        with trio.fail_after(5):  # a hang would fail here; the bounded timeouts answer well within it
            with pytest.raises(PortUnavailable, match="cannot be reached"):
                await state.get("k")
            with pytest.raises(PortUnavailable):
                await state.take_tokens("bucket", 1, 10, 1)
            with pytest.raises(PortUnavailable):
                await state.breaker_read("breaker", BreakerConfig())
        own_redis.start()  # an empty Redis (no persistence): the scripts are loaded again on NOSCRIPT
        assert await state.get("k") is None  # the very first call after the restart succeeds: the pool reconnected
        await state.set("k", b"after")
        assert await state.get("k") == b"after"
        assert await state.take_tokens("bucket", 1, 10, 1) == 0.0
        assert (await state.breaker_read("breaker", BreakerConfig())).state == "closed"


async def test_a_broker_subscription_is_lost_when_redis_goes_and_a_new_one_works_when_it_is_back(own_redis: OwnRedis) -> None:
    async with opened_client(f"{own_redis.url}?timeout_s=0.5") as client:
        broker = RedisBroker(client)
        async with broker.subscriber() as node:
            await node.subscribe("alice")
            assert await broker.publish("alice", b"1") == 1
            own_redis.stop()
            with trio.fail_after(5):
                got = []
                with pytest.raises(BrokerLost):
                    async for item in node.messages():
                        got.append(item)
                assert got == [("alice", b"1")]  # what came before is read, then BrokerLost: nothing missed silently
                with pytest.raises(BrokerLost):
                    await node.subscribe("bob")
                with pytest.raises(PortUnavailable):
                    await broker.publish("alice", b"2")
        own_redis.start()
        async with broker.subscriber() as node:
            await node.subscribe("alice")
            assert await broker.publish("alice", b"3") == 1
            with trio.fail_after(5):
                assert await node.messages().__anext__() == ("alice", b"3")


async def test_opening_on_a_redis_that_is_not_there_says_so(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?timeout_s=0.5"
    settings = BackendSettings({"state": url, "broker": url}, tmp_path, {})
    with trio.fail_after(5), pytest.raises(BackendUnavailable, match="cannot be reached"):
        async with open_backends(settings, {"state"}):
            pass


async def test_the_front_end_answers_503_while_redis_is_down_and_recovers_without_a_restart(own_redis: OwnRedis,
                                                                                           tmp_path: Path) -> None:
    """POST /v1/notifications with an Idempotency-Key needs the State (its lease): 503 problem+json, not a 500 or a hang."""
    async with running_node(tmp_path, state=f"{own_redis.url}?timeout_s=0.5") as herald, http(herald) as client:
        first = await client.post("/v1/notifications", json=web_notification("r1"), headers={"Idempotency-Key": "a"})
        assert first.status_code == 202, first.text
        own_redis.stop()
        with trio.fail_after(10):
            down = await client.post("/v1/notifications", json=web_notification("r1"), headers={"Idempotency-Key": "b"})
            batch = await client.post("/v1/notifications/batch", json={"items": [web_notification("r1")]},
                                      headers={"Idempotency-Key": "c"})
        for answer in (down, batch):
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["retry-after"] == "1"
            assert "redis" not in answer.text.lower()  # where the backend is stays in the log
        own_redis.start()
        again = await client.post("/v1/notifications", json=web_notification("r1"), headers={"Idempotency-Key": "b"})
        assert again.status_code == 202, again.text


async def test_a_worker_waits_for_redis_in_place_its_attempts_neither_failed_nor_counted_nor_restarted(
        own_redis: OwnRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The provider's gate meets Redis away on its lease and breaker calls: it waits (backoff), the delivery resumes after."""
    body = {"user_id": "r2", "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}
    async with running_node(tmp_path, state=f"{own_redis.url}?timeout_s=0.5") as herald, http(herald) as client:
        warm = await client.post("/v1/notifications", json=body)
        assert (await wait_final(client, warm.json()["notification_id"]))["channels"]["sms"]["status"] == "delivered"
        provider = herald.providers[Channel.SMS]
        gate = provider.gate
        own_redis.stop()
        await trio.sleep(1.5)  # past the gate's slice lease: the next admission must ask the State
        waiting = await client.post("/v1/notifications", json=body)  # the bootstrap key has no rate limit: no State
        assert waiting.status_code == 202, waiting.text
        nid = waiting.json()["notification_id"]
        with trio.fail_after(20):
            while gate.state_waits < 3:  # asked again, with backoff, while Redis is away
                await trio.sleep(0.05)
        status = (await client.get(f"/v1/notifications/{nid}")).json()["channels"]["sms"]
        assert status["status"] == "queued", status  # not failed, not retrying: waiting
        own_redis.start()
        done = await wait_final(client, nid, 30)
        steps = [a["status"] for a in done["channels"]["sms"]["attempts"]]
        assert steps == ["accepted", "queued", "sent", "delivered"], steps  # one attempt, no retry
        view = await gate.view()
        assert view.consecutive_failures == 0 and view.state == "closed"  # not the provider's failure
        assert provider.calls == 2
    crashed = [r for r in caplog.records if r.name == "herald.supervisor" and "provider:sms" in r.getMessage()]
    assert crashed == []  # before: the provider crashed and was restarted (restarts escalate)


# -- several workers, one bucket, one breaker -------------------------------------------------------


async def test_two_workers_sharing_one_bucket_admit_no_more_than_capacity_plus_rate_times_the_window(shared_redis: Endpoint) -> None:
    capacity, rate, run_s = 20.0, 200.0, 1.0
    url = f"{shared_redis.url}?prefix=twobuckets:"
    async with redis_state(url) as one, redis_state(url) as two:
        await one.client.call(lambda r: r.delete("twobuckets:{bucket:shared}"))
        taken = {"one": 0, "two": 0}
        start = trio.current_time()
        end = start + run_s

        async def taker(state: RedisState, worker: str) -> None:
            while (now := trio.current_time()) < end:
                wait = await state.take_tokens("shared", 1, capacity, rate)
                if wait == 0.0:
                    taken[worker] += 1
                else:
                    await trio.sleep(min(wait, end - now))

        async with trio.open_nursery() as nursery:
            for state, worker in ((one, "one"), (two, "two")):
                for _ in range(10):
                    nursery.start_soon(taker, state, worker)
        elapsed = trio.current_time() - start
    total = sum(taken.values())
    bound = capacity + rate * elapsed
    print(f"take_tokens, 2 workers x 10 tasks for {elapsed:.2f} s: {taken} = {total}; bound {bound:.1f}")
    assert total <= bound, f"{total} admitted, at most {bound:.1f} allowed"
    assert taken["one"] > 0 and taken["two"] > 0 and total >= capacity


async def test_two_workers_leasing_from_one_bucket_spend_no_more_than_the_bound(shared_redis: Endpoint) -> None:
    """Each worker leases slices of 5, spends them from wait_s on while its lease lasts, gives back what is left."""
    capacity, rate, run_s, lease_s = 20.0, 200.0, 1.0, 0.05
    url = f"{shared_redis.url}?prefix=twoleases:"
    spent: list[float] = []
    async with redis_state(url) as one, redis_state(url) as two:
        start = trio.current_time()
        end = start + run_s

        async def worker(state: RedisState) -> None:
            held: tuple[str, int] | None = None
            while trio.current_time() < end:
                asked = trio.current_time()
                got = await state.lease_tokens("shared", 5, capacity, rate, lease_s, held)
                held = None
                if got.granted == 0:
                    await trio.sleep(min(got.wait_s, max(0.0, end - trio.current_time())))
                    continue
                await trio.sleep(got.wait_s)
                left = got.granted
                while left and trio.current_time() < min(end, asked + got.wait_s + lease_s):
                    spent.append(trio.current_time())
                    left -= 1
                    await trio.sleep(0.001)
                held = (got.lease_id, left)
            if held is not None:
                await state.lease_tokens("shared", 0, capacity, rate, lease_s, held)

        async with trio.open_nursery() as nursery:
            for state in (one, two):
                for _ in range(4):
                    nursery.start_soon(worker, state)
        elapsed = trio.current_time() - start
    bound = capacity + rate * elapsed
    print(f"lease_tokens, 2 workers x 4 tasks for {elapsed:.2f} s: {len(spent)} spent; bound {bound:.1f}")
    assert len(spent) <= bound
    assert len(spent) >= capacity


async def test_two_workers_sharing_one_breaker_get_at_most_one_half_open_probe(shared_redis: Endpoint) -> None:
    config = BreakerConfig(failure_threshold=2, open_timeout_s=0.05, success_threshold=1)
    url = f"{shared_redis.url}?prefix=twobreakers:"
    async with redis_state(url) as one, redis_state(url) as two:
        for round_ in range(5):
            for owner in ("w1", "w2"):
                await one.breaker_report("b", config, owner, "failure", False)
            assert (await two.breaker_read("b", config)).state == "open"
            await trio.sleep(0.06)
            probes: list[str] = []

            async def ask(state: RedisState, owner: str) -> None:
                view = await state.breaker_admit("b", config, owner, 5.0)
                if view.allowed:
                    assert view.probe
                    probes.append(owner)

            async with trio.open_nursery() as nursery:
                for state, worker in ((one, "one"), (two, "two")):
                    for task in range(10):
                        nursery.start_soon(ask, state, f"{worker}.{task}")
            assert len(probes) == 1, f"round {round_}: probes {probes}"
            closed = await (one if probes[0].startswith("one") else two).breaker_report("b", config, probes[0], "success", True)
            assert closed.state == "closed"


# -- the URL -----------------------------------------------------------------------------------------


def test_the_redis_url_and_its_options() -> None:
    assert check_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    settings = RedisSettings.from_url("redis://:secret@cache.internal:6380/2?prefix=h1:&timeout_s=0.25&max_connections=8")
    assert (settings.host, settings.port, settings.db, settings.password) == ("cache.internal", 6380, 2, "secret")
    assert (settings.prefix, settings.timeout_s, settings.max_connections) == ("h1:", 0.25, 8)
    assert RedisSettings.from_url("redis://localhost").port == 6379
    for url, why in [
        ("redis://localhost/0?colour=red", "unknown redis:// options"),
        ("redis://localhost/zero", "numeric port and database"),
        ("redis://localhost/0?timeout_s=0", "timeout_s must lie"),
        ("redis://localhost/0?max_connections=many", "max_connections a count"),
    ]:
        with pytest.raises(ValueError, match=why):
            RedisSettings.from_url(url)
    with pytest.raises(ValueError, match="needs a location"):
        check_url("redis://")
