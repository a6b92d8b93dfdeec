"""The Redis backends: the State and the Broker shared by every node of a cluster.

    client.py   the connection pool; each call a worker thread (trio.to_thread); Redis down: PortUnavailable, fast
    scripts.py  the Lua scripts: token buckets, the Provider's leased bucket and shared breaker, recent pushes
    state.py    the State: keys with TTLs, buckets, the gate, pub/sub, recent pushes
    pubsub.py   one pub/sub connection read by a worker thread (State.subscribe and the Broker's subscriptions)
    broker.py   the Broker: a channel per user, a subscription (a connection) per node

URL: `redis://[user:password@]host:port/db?prefix=herald:&timeout_s=1&max_connections=32`
(`prefix`: what every key and channel starts with, so several Heralds or tests share one Redis;
`timeout_s`: to connect and for each answer, so a call fails fast when Redis is down;
`max_connections`: the pool, and the calls in flight at once). The state and broker settings may
name the same Redis; each opens its own pool.

`open_backends(settings, ports)` is the entry point (reactor.backends calls it for `redis://`).
Opening PINGs the server: a Redis that cannot be reached at start is BackendUnavailable, with the
URL; one that goes away later makes calls fail fast (PortUnavailable) until it is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from reactor.backends import BackendSettings, Backends, BackendUnavailable, not_opened
from reactor.ports import PortUnavailable

from .broker import RedisBroker
from .client import RedisClient, RedisSettings
from .state import RedisState

SERVES = frozenset({"state", "broker"})


@asynccontextmanager
async def opened_client(url: str) -> AsyncIterator[RedisClient]:
    """A client of the Redis the URL names, checked with a PING; its connections closed when the block ends."""
    try:
        client = RedisClient(RedisSettings.from_url(url))
    except ValueError as exc:
        raise BackendUnavailable(str(exc)) from exc
    try:
        try:
            await client.call(lambda r: r.ping())
        except PortUnavailable as exc:
            raise BackendUnavailable(f"{exc}: start it, or change the URL") from exc
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def open_backends(settings: BackendSettings, ports: frozenset[str]) -> AsyncIterator[Backends]:
    """Open the State and the Broker (those of `ports`) on the Redis their settings name."""
    unknown = ports - SERVES
    if unknown:
        raise BackendUnavailable(f"redis:// serves only {', '.join(sorted(SERVES))}, not {', '.join(sorted(unknown))}")
    ready: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        if "state" in ports:
            ready["state"] = RedisState(await stack.enter_async_context(opened_client(settings.urls["state"])))
        if "broker" in ports:
            ready["broker"] = RedisBroker(await stack.enter_async_context(opened_client(settings.urls["broker"])))
        yield Backends(**ready, **not_opened(ports))


__all__ = ["RedisBroker", "RedisClient", "RedisSettings", "RedisState", "open_backends", "opened_client"]
