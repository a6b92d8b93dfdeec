"""Per-key rate limit: a token bucket per key (State.take_tokens); 429 with Retry-After = the wait, rounded up."""

from __future__ import annotations

import pytest
import trio

from actors.api.errors import retry_after
from actors.services.credentials import ApiKeys
from reactor.backends.embedded import MemoryState, SqliteKeyStore
from tests.helpers import http, running_node


async def test_a_key_over_its_limit_gets_429_with_retry_after(tmp_path):
    async with running_node(tmp_path) as herald:
        keys = herald.gateway.keys
        _, slow = await keys.create(["read"], "slow", rate_per_s=0.5, burst=2)
        _, other = await keys.create(["read"], "other", rate_per_s=0.5, burst=2)
        async with http(herald, key=slow) as client, http(herald, key=other) as neighbour:
            assert [(await client.get("/v1/users/r1/notifications")).status_code for _ in range(2)] == [200, 200]
            limited = await client.get("/v1/users/r1/notifications")
            assert limited.status_code == 429, limited.text
            assert limited.headers["content-type"] == "application/problem+json"
            assert limited.headers["Retry-After"] == "2"  # one token at 0.5/s: just under 2 s, rounded up
            problem = limited.json()
            assert problem["errors"][0]["field"] == "Authorization" and "0.5/s, burst 2" in problem["detail"]
            # limits are per key, and the bootstrap key has none
            assert (await neighbour.get("/v1/users/r1/notifications")).status_code == 200
        async with http(herald) as bootstrap:
            codes = {(await bootstrap.get("/v1/users/r1/notifications")).status_code for _ in range(30)}
            assert codes == {200}
        assert keys.throttled == 1


async def test_keys_without_their_own_limit_get_the_nodes_default(tmp_path):
    async with running_node(tmp_path, key_rate_per_s=0.25, key_burst=1) as herald:
        _, key = await herald.gateway.keys.create(["send"], "default limits")
        async with http(herald, key=key) as client:
            # the limit is checked before the scope: a request that would be 403 still costs a token
            assert (await client.get("/v1/users/r2/notifications")).status_code == 403
            limited = await client.get("/v1/users/r2/notifications")
            assert limited.status_code == 429 and limited.headers["Retry-After"] == "4"


async def test_the_bucket_refills_after_the_announced_wait(tmp_path, autojump_clock):
    store = SqliteKeyStore(tmp_path / "keys.sqlite3")
    await store.open()
    try:
        keys = ApiKeys(store, MemoryState(), "boot", rate_per_s=2, burst=3)
        _, full = await keys.create(["send"], "paced")
        caller = await keys.authenticate(f"Bearer {full}")
        assert caller is not None and (caller.rate_per_s, caller.burst) == (2, 3)
        assert [await keys.throttle(caller) for _ in range(3)] == [0.0, 0.0, 0.0]
        wait = await keys.throttle(caller)
        assert wait == pytest.approx(0.5) and retry_after(wait) == "1"
        await trio.sleep(wait)
        assert await keys.throttle(caller) == 0.0
        assert await keys.throttle(caller) > 0
        await trio.sleep(10)  # a long pause refills to the burst, not beyond
        assert [await keys.throttle(caller) > 0 for _ in range(4)] == [False, False, False, True]
        bootstrap = await keys.authenticate("Bearer boot")
        assert bootstrap is not None and bootstrap.bootstrap
        assert all([await keys.throttle(bootstrap) == 0.0 for _ in range(10_000)])
    finally:
        await store.close()


def test_retry_after_rounds_the_wait_up_to_whole_seconds():
    assert [retry_after(w) for w in (0.0001, 0.5, 1.0, 1.0001, 2.0, 59.2)] == ["1", "1", "1", "2", "2", "60"]
