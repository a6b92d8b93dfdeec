"""The connection to Redis: redis-py's sync client, each call in a worker thread (trio.to_thread).

Measured here (/work/shared/FACTS.md): the sync client through trio.to_thread answers an
EVALSHA in 0.37 ms at p50, redis.asyncio through trio-asyncio in 0.50 ms; so every call is
one thread crossing, and a call that needs several commands sends them in one pipeline.

A pool of at most `max_connections` sockets, and a CapacityLimiter of the same size: a call
holds a thread and a connection, never waits for one inside the thread. Timeouts are
bounded (`timeout_s` to connect and for each answer), and a failed call is retried once (a
pooled connection dropped by a restarted server reconnects): with Redis down, a call fails
within about 2 x timeout_s, as PortUnavailable, and the next call after Redis is back
succeeds (the pool reconnects by itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from reactor.ports import PortUnavailable

T = TypeVar("T")

DEFAULT_PREFIX = "herald:"
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_MAX_CONNECTIONS = 32
OPTIONS = ("prefix", "timeout_s", "max_connections")


@dataclass(frozen=True)
class RedisSettings:
    """What a redis:// URL says: redis://host:port/db?prefix=herald:&timeout_s=1&max_connections=32."""

    host: str
    port: int
    db: int
    prefix: str = DEFAULT_PREFIX  # every key and channel starts with it (several Heralds, or tests, on one Redis)
    timeout_s: float = DEFAULT_TIMEOUT_S  # to connect, and for each answer
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    password: str | None = None
    username: str | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        """Parse a redis:// URL; ValueError naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"expected a redis:// URL, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"a redis:// URL names a host: redis://host:6379/0, got {url!r}")
        path = parts.path.strip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"redis://host:port/db takes a numeric port and database, got {url!r}") from None
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - set(OPTIONS)
        if unknown:
            raise ValueError(f"unknown redis:// options {sorted(unknown)} in {url!r}; the options are {', '.join(OPTIONS)}")
        options: dict[str, Any] = {}
        try:
            if "prefix" in query:
                options["prefix"] = query["prefix"][-1]
            if "timeout_s" in query:
                options["timeout_s"] = float(query["timeout_s"][-1])
            if "max_connections" in query:
                options["max_connections"] = int(query["max_connections"][-1])
        except ValueError:
            raise ValueError(f"timeout_s takes a number of seconds and max_connections a count, in {url!r}") from None
        if not 0 < options.get("timeout_s", 1.0) <= 60 or not 1 <= options.get("max_connections", 1) <= 1024:
            raise ValueError(f"timeout_s must lie in (0, 60] and max_connections in [1, 1024], in {url!r}")
        return cls(parts.hostname, port, db, password=parts.password, username=parts.username, **options)

    def where(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


class RedisClient:
    """The pool, and `call` to run a function of a redis.Redis in a worker thread."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.pool = redis.ConnectionPool(
            host=settings.host, port=settings.port, db=settings.db, username=settings.username, password=settings.password,
            socket_timeout=settings.timeout_s, socket_connect_timeout=settings.timeout_s,
            # one retry, on a dropped connection only (a restarted Redis): never after a timeout, when the script may have run
            max_connections=settings.max_connections, retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self.redis = redis.Redis(connection_pool=self.pool)
        self.limiter = trio.CapacityLimiter(settings.max_connections)

    def connection_kwargs(self) -> dict[str, Any]:
        """How to open a connection of its own (a pub/sub subscriber's: RESP2, where pub/sub replies are plain replies)."""
        s = self.settings
        return dict(host=s.host, port=s.port, db=s.db, username=s.username, password=s.password, socket_timeout=s.timeout_s,
                    socket_connect_timeout=s.timeout_s, protocol=2)

    async def call(self, work: Callable[[redis.Redis], T]) -> T:
        """work(client) in a worker thread; a Redis that cannot be reached is PortUnavailable."""
        try:
            return await trio.to_thread.run_sync(work, self.redis, limiter=self.limiter)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise PortUnavailable(f"Redis at {self.settings.where()} cannot be reached: {exc}") from exc

    async def close(self) -> None:
        await trio.to_thread.run_sync(self.pool.disconnect)
