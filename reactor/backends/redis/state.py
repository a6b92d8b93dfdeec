"""The Redis State: keys with TTLs, token buckets, the Provider's gate, pub/sub and recent pushes on one Redis.

Every key and channel starts with the URL's prefix (`herald:` by default). The gate's keys use
a hash tag (`<prefix>{gate:<key>}:...`), so a bucket's keys stay in one slot on a Redis Cluster.

Time is Redis's: TTLs are Redis expiries (PX, in whole milliseconds rounded up: never a moment
less), and the bucket and breaker scripts read TIME inside the script (reactor/backends/redis/scripts.py).
Redis's clock is the one clock all workers of a provider share; a worker's own clock (Trio's is
per process, the wall clock differs between machines) could not be. The answers are durations.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from redis.commands.core import Script

from reactor.circuit_breaker import BreakerConfig
from reactor.ports import BreakerEvent, BreakerView, TokenLease

from . import scripts
from .client import RedisClient
from .pubsub import Listener

SUBSCRIBER_BUFFER = 1000  # messages a State.subscribe reader may be behind; newer ones are dropped past it


def _ms(ttl_s: float) -> int:
    """A TTL in whole milliseconds, rounded up (at least 1)."""
    if not ttl_s > 0 or math.isinf(ttl_s):
        raise ValueError(f"a TTL must be positive and finite, got {ttl_s!r}")
    return max(1, math.ceil(ttl_s * 1000))


def _float(value: bytes | str) -> float:
    return float(value)


class RedisState:
    """The State port on Redis (reactor/ports.py State)."""

    def __init__(self, client: RedisClient, clock: Callable[[], float] | None = None) -> None:
        """`clock`: for tests only (tests/kit drives the scripts at a machine's time); None reads Redis's TIME."""
        self.client = client
        self.clock = clock
        self.prefix = client.settings.prefix
        r = client.redis
        self._take: Script = r.register_script(scripts.TAKE)
        self._lease: Script = r.register_script(scripts.LEASE)
        self._breaker: Script = r.register_script(scripts.BREAKER)
        self._append_recent: Script = r.register_script(scripts.APPEND_RECENT)
        self.dropped_messages = 0

    def _now(self) -> str:
        return "" if self.clock is None else repr(float(self.clock()))

    def _key(self, key: str) -> str:
        return f"{self.prefix}kv:{key}"

    # -- keys with TTLs --------------------------------------------------------------------

    async def put_if_absent(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        name, px = self._key(key), _ms(ttl_s)
        # SET NX GET (Redis 7): stores unless the key exists, and answers the value that was there
        found: bytes | None = await self.client.call(lambda r: r.set(name, value, px=px, nx=True, get=True))  # type: ignore[arg-type,return-value]
        return found

    async def get(self, key: str) -> bytes | None:
        name = self._key(key)
        found: bytes | None = await self.client.call(lambda r: r.get(name))  # type: ignore[arg-type,return-value]
        return found

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        name, px = self._key(key), None if ttl_s is None else _ms(ttl_s)
        await self.client.call(lambda r: r.set(name, value, px=px))

    async def delete(self, key: str) -> None:
        name = self._key(key)
        await self.client.call(lambda r: r.delete(name))

    # -- token buckets and the Provider's gate: Lua scripts at Redis's time ---------------------

    async def take_tokens(self, key: str, n: float, capacity: float, refill_per_s: float) -> float:
        if not (n > 0 and math.isfinite(n)):
            raise ValueError(f"token amount must be positive and finite, got {n!r}")
        if not (0 < capacity < math.inf and 0 < refill_per_s < math.inf):
            raise ValueError("capacity and refill rate must be positive and finite")
        keys, args = [f"{self.prefix}{{bucket:{key}}}"], [repr(float(n)), repr(float(capacity)), repr(float(refill_per_s)), self._now()]
        return _float(await self.client.call(lambda r: self._take(keys, args, client=r)))

    def _gate_keys(self, key: str, *parts: str) -> list[str]:
        return [f"{self.prefix}{{gate:{key}}}:{part}" for part in parts]

    async def lease_tokens(
        self, key: str, want: int, capacity: float, refill_per_s: float, lease_s: float,
        give_back: tuple[str, int] | None = None, reserve: int = 0,
    ) -> TokenLease:
        if want < 0 or not (0 < lease_s < math.inf):
            raise ValueError(f"want must be >= 0 and lease_s positive and finite: {want!r}, {lease_s!r}")
        if reserve < 0:
            raise ValueError(f"reserve must be >= 0, got {reserve!r}")
        if not (0 < capacity < math.inf and 0 < refill_per_s < math.inf):
            raise ValueError("capacity and refill rate must be positive and finite")
        keys = self._gate_keys(key, "bucket", "leases", "incarnation")
        give_id, unused = give_back if give_back is not None else ("", 0)
        args: list[str | int] = [int(want), repr(float(capacity)), repr(float(refill_per_s)), repr(float(lease_s)), give_id, int(unused), int(reserve), self._now()]
        lease_id, granted, wait_s, free = await self.client.call(lambda r: self._lease(keys, args, client=r))
        return TokenLease(lease_id.decode(), int(granted), _float(wait_s), _float(free))

    async def _breaker_step(self, key: str, config: BreakerConfig, *args: Any) -> BreakerView:
        keys = self._gate_keys(key, "breaker")
        argv: list[str | int] = [args[0], self._now(), config.failure_threshold, repr(float(config.open_timeout_s)), config.success_threshold, *args[1:]]
        reply = await self.client.call(lambda r: self._breaker(keys, argv, client=r))
        (state, failures, successes, retry_in_s, owner, opened, admitted, rejected, probes, stale, allowed, probe,
         transitions) = (item.decode() for item in reply)
        return BreakerView(
            state=state, consecutive_failures=int(failures), consecutive_successes=int(successes),
            retry_in_s=float(retry_in_s), probe_owner=owner or None, opened=int(opened), admitted=int(admitted),
            rejected=int(rejected), probes=int(probes), stale_outcomes=int(stale), allowed=allowed == "1",
            probe=probe == "1", transitions=tuple(transitions.split(",")) if transitions else (),
        )

    async def breaker_admit(self, key: str, config: BreakerConfig, owner: str, probe_lease_s: float) -> BreakerView:
        if not (0 < probe_lease_s < math.inf):
            raise ValueError(f"probe_lease_s must be positive and finite, got {probe_lease_s!r}")
        return await self._breaker_step(key, config, "admit", owner, repr(float(probe_lease_s)))

    async def breaker_report(self, key: str, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool) -> BreakerView:
        if event not in ("success", "failure", "release"):
            raise ValueError(f"unknown breaker event {event!r}")
        return await self._breaker_step(key, config, "report", owner, event, "1" if probe else "0")

    async def breaker_read(self, key: str, config: BreakerConfig) -> BreakerView:
        return await self._breaker_step(key, config, "read", "")

    # -- recent pushes -----------------------------------------------------------------------------

    async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
        if max_items < 1 or ttl_s <= 0:
            raise ValueError("a recent list keeps at least one item, for a TTL above 0")
        keys, args = [f"{self.prefix}recent:{key}"], [item, int(max_items), _ms(ttl_s)]  # RPUSH, LTRIM, PEXPIRE: one step
        await self.client.call(lambda r: self._append_recent(keys, args, client=r))  # type: ignore[arg-type]

    async def recent(self, key: str) -> list[bytes]:
        name = f"{self.prefix}recent:{key}"
        items: list[bytes] = await self.client.call(lambda r: r.lrange(name, 0, -1))  # type: ignore[arg-type,return-value]
        return items

    # -- pub/sub -------------------------------------------------------------------------------------

    def _channel(self, channel: str) -> str:
        return f"{self.prefix}chan:{channel}"

    async def publish(self, channel: str, message: bytes) -> int:
        name = self._channel(channel)
        return int(await self.client.call(lambda r: r.publish(name, message)))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """A connection of its own; a reader more than SUBSCRIBER_BUFFER messages behind loses the newer ones."""
        send, receive = trio.open_memory_channel[bytes](SUBSCRIBER_BUFFER)

        def on_message(_channel: bytes, data: bytes) -> None:
            try:
                send.send_nowait(bytes(data))
            except trio.WouldBlock:
                self.dropped_messages += 1

        listener = Listener(self.client.connection_kwargs(), on_message, lambda _why: send.close(), self.client.settings.timeout_s)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            try:
                await listener.command("SUBSCRIBE", self._channel(channel))
                async with receive:
                    yield receive
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2 * self.client.settings.timeout_s + 1):
                    if listener.lost is None:
                        try:
                            await listener.command("UNSUBSCRIBE")
                        except Exception:  # noqa: BLE001 - the connection is gone: Redis dropped the subscription with it
                            pass
                listener.stop()
