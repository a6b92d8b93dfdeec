"""Every implementation of the bucket and the breaker, under one set of machines: the registry.

A Target is a property machine (rules, invariants, reference model) with the implementation it drives. The pure
machines (reactor/token_bucket.py, reactor/circuit_breaker.py, reactor/gate_state.py) are driven directly; the
State-backed ones through a State's gate operations (State.lease_tokens / breaker_admit / breaker_report /
breaker_read, reactor/ports.py), each call made at the machine's `now` on a clock the adapter sets (a Trio clock
that reads what it is told), so the machines' time and the State's are one.

A State backend is one entry of STATE_BACKENDS: a name and an async context manager yielding an open State. The
embedded ones are here (memory, and SQLite: its gate state is kept in memory by the same code, but it is opened and
closed as a node does); a Redis backend (the scale-out issue) is one more entry, and every machine and every
concurrent-workers rule runs against it with no other change. How the adapters look inside a State to check
free + leased <= capacity is the one backend-specific part: `inspect_bucket` (for Redis: HGETALL of the bucket's hash).
"""

from __future__ import annotations

import atexit
import contextlib
import random
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.abc

from reactor.backends.embedded import MemoryState, SqliteState
from reactor.circuit_breaker import BreakerConfig, CircuitBreaker
from reactor.gate_state import LeasedBucket, Lease, SharedBreaker
from reactor.ports import BreakerEvent, BreakerView, TokenLease
from reactor.token_bucket import TokenBucket

KEY = "gate:sms"


class ToldClock(trio.abc.Clock):
    """A Trio clock that reads what it was last told: the machine's `now` (nothing sleeps in a gate operation)."""

    def __init__(self) -> None:
        self.now = 0.0

    def start_clock(self) -> None:
        return None

    def current_time(self) -> float:
        return self.now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return 0.0 if deadline <= self.now else 0.01  # a real wait (a thread of the SQLite State): poll


StateFactory = Callable[[], Any]  # () -> async context manager yielding an open State


@asynccontextmanager
async def memory_state(cls: type[MemoryState] = MemoryState) -> AsyncIterator[MemoryState]:
    yield cls()


@asynccontextmanager
async def sqlite_state(cls: type[SqliteState] = SqliteState) -> AsyncIterator[SqliteState]:
    folder = tempfile.mkdtemp(prefix="herald-kit-")
    state = cls(Path(folder) / "state.sqlite3")
    await state.open()
    try:
        yield state
    finally:
        await state.close()
        shutil.rmtree(folder, ignore_errors=True)


# -- the Redis State: one redis-server for the process, started at first use; each session under a prefix of its own


class _RedisServer:
    """tests/servers.py's redis-server, started once per process when a Redis target first runs, stopped at exit."""

    url: str | None = None

    @classmethod
    def get(cls) -> str:
        if cls.url is None:
            from tests.servers import redis_server

            stack = contextlib.ExitStack()
            cls.url = stack.enter_context(redis_server(Path(tempfile.mkdtemp(prefix="herald-kit-redis-")))).url
            atexit.register(stack.close)
        return cls.url


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


class redis_state:  # noqa: N801 - used as the other factories are (a function returning a context manager)
    """The Redis State at the machine's time (its `clock`: Trio's, which the session sets), under a fresh prefix.

    A class, not an async generator: a StateSession enters it in one trio.run and leaves it in another, and Trio
    finalizes a run's async generators when that run ends. Its calls reach Redis one at a time, in the order Trio
    runs the callers (a FIFO lock around each round trip): a race's interleaving is then the one the machine drew, as
    on the embedded States, where hypothesis needs it to be repeatable (each script is atomic on the server anyway;
    tests/conformance and tests/reactor/test_redis_backend.py race real threads). A mutant that reads, yields and
    writes still interleaves between its round trips.
    """

    def __init__(self, cls: Any = None) -> None:
        self.cls = cls

    async def __aenter__(self) -> Any:
        from reactor.backends.redis import RedisClient, RedisSettings, RedisState

        class OneAtATime(RedisClient):
            lock: trio.Lock | None = None

            async def call(self, work: Any) -> Any:
                self.lock = self.lock or trio.Lock()
                async with self.lock:
                    return await super().call(work)

        self.client = OneAtATime(RedisSettings.from_url(f"{_RedisServer.get()}?prefix=kit{uuid.uuid4().hex[:12]}:"))
        return (self.cls or RedisState)(self.client, clock=trio.current_time)

    async def __aexit__(self, *exc: object) -> None:
        self.client.pool.disconnect()


def _redis_bucket(state: Any) -> LeasedBucket | None:
    """HGETALL of the bucket's hash and its leases' sorted set, as the pure machine they stand for."""
    hkey, lkey, _ = state._gate_keys(KEY, "bucket", "leases", "incarnation")
    fields = {k.decode(): v.decode() for k, v in state.client.redis.hgetall(hkey).items()}
    if not fields:
        return None
    bucket = LeasedBucket(float(fields["c"]), float(fields["r"]), updated=float(fields["u"]), next_id=int(fields["n"]),
                          incarnation=int(fields["i"]))
    bucket.free = float(fields["f"])  # below 0 too (a debt): the constructor would take a negative for "start full"
    for lease_id, expires in state.client.redis.zrange(lkey, 0, -1, withscores=True):
        name = lease_id.decode()
        bucket.leases[name] = Lease(int(fields[f"t{name}"]), float(expires))
    return bucket


def inspect_bucket(state: Any) -> LeasedBucket | None:
    """The bucket as the State keeps it (the embedded backends: the pure machine itself; Redis: read back from its keys)."""
    if hasattr(state, "_gate_keys"):
        return _redis_bucket(state)
    return state._leased_buckets.get(KEY)  # type: ignore[no-any-return]


class StateSession:
    """One State held open across a machine's steps; each call runs at the time it is told."""

    def __init__(self, factory: StateFactory) -> None:
        self.clock = ToldClock()
        self._factory = factory
        self._context: Any = None
        self.state: Any = None

        async def open_() -> None:
            self._context = factory()
            self.state = await self._context.__aenter__()

        trio.run(open_, clock=self.clock)

    def call(self, now: float, operation: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
        self.clock.now = now
        return trio.run(operation, self.state, clock=self.clock)

    def race(self, now: float, operations: Sequence[Callable[[Any], Coroutine[Any, Any, Any]]], order: Sequence[int],
             yields: Sequence[int]) -> list[Any]:
        """Run the operations at once, as N workers' round trips: started in `order`, the i-th after `yields[i]` checkpoints."""
        self.clock.now = now
        results: list[Any] = [None] * len(operations)

        async def all_at_once(state: Any) -> None:
            async def one(i: int) -> None:
                for _ in range(yields[i]):
                    await trio.lowlevel.checkpoint()
                results[i] = await operations[i](state)

            async with trio.open_nursery() as nursery:
                for i in order:
                    nursery.start_soon(one, i)

        trio.run(all_at_once, self.state, clock=self.clock)
        return results

    def close(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            trio.run(context.__aexit__, None, None, None, clock=self.clock)


class StateLeasedBucket:
    """LeasedBucket's face (what LeasedBucketMachine drives), each lease one State.lease_tokens round trip."""

    factory: StateFactory = memory_state

    def __init__(self, capacity: float, refill_per_s: float, updated: float = 0.0) -> None:
        self.capacity, self.refill_per_s = capacity, refill_per_s
        self.session = StateSession(type(self).factory)
        self.lease(0, 1.0, updated)  # the State makes the bucket at its first call: full, at `updated`

    def _inside(self) -> LeasedBucket:
        bucket = inspect_bucket(self.session.state)
        assert bucket is not None, "the State lost the bucket"
        return bucket

    def operation(self, want: int, lease_s: float, give_back: tuple[str, int] | None = None,
                  reserve: int = 0) -> Callable[[Any], Coroutine[Any, Any, TokenLease]]:
        async def lease(state: Any) -> TokenLease:
            return await state.lease_tokens(KEY, want, self.capacity, self.refill_per_s, lease_s, give_back, reserve)  # type: ignore[no-any-return]

        return lease

    def lease(self, want: int, lease_s: float, now: float, give_back: tuple[str, int] | None = None,
              reserve: int = 0) -> TokenLease:
        return self.session.call(now, self.operation(want, lease_s, give_back, reserve))  # type: ignore[no-any-return]

    @property
    def leases(self) -> dict[str, Lease]:
        return self._inside().leases

    @property
    def updated(self) -> float:
        return self._inside().updated

    @property
    def free(self) -> float:
        return self._inside().free

    def free_at(self, now: float) -> float:
        return self._inside().free_at(now)

    def time_until(self, n: int, now: float) -> float:
        return self._inside().time_until(n, now)

    def close(self) -> None:
        self.session.close()


class StateSharedBreaker:
    """SharedBreaker's face (what SharedBreakerMachine drives), each step one State.breaker_* round trip."""

    factory: StateFactory = memory_state

    def __init__(self) -> None:
        self.session = StateSession(type(self).factory)

    def admit_operation(self, config: BreakerConfig, owner: str, probe_lease_s: float) -> Callable[[Any], Coroutine[Any, Any, BreakerView]]:
        async def admit(state: Any) -> BreakerView:
            return await state.breaker_admit(KEY, config, owner, probe_lease_s)  # type: ignore[no-any-return]

        return admit

    def admit(self, config: BreakerConfig, owner: str, probe_lease_s: float, now: float) -> BreakerView:
        return self.session.call(now, self.admit_operation(config, owner, probe_lease_s))  # type: ignore[no-any-return]

    def report_operation(self, config: BreakerConfig, owner: str, event: BreakerEvent,
                         probe: bool) -> Callable[[Any], Coroutine[Any, Any, BreakerView]]:
        async def report(state: Any) -> BreakerView:
            return await state.breaker_report(KEY, config, owner, event, probe)  # type: ignore[no-any-return]

        return report

    def report(self, config: BreakerConfig, owner: str, event: BreakerEvent, probe: bool, now: float) -> BreakerView:
        return self.session.call(now, self.report_operation(config, owner, event, probe))  # type: ignore[no-any-return]

    def read(self, config: BreakerConfig, now: float) -> BreakerView:
        async def read(state: Any) -> BreakerView:
            return await state.breaker_read(KEY, config)  # type: ignore[no-any-return]

        return self.session.call(now, read)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.session.close()


def on_state(base: type, factory: StateFactory, name: str) -> type:
    """The State-backed adapter `base` over the State `factory` opens."""
    return type(name, (base,), {"factory": staticmethod(factory)})


def shuffled(rng_seed: int, n: int) -> list[int]:
    order = list(range(n))
    random.Random(rng_seed).shuffle(order)
    return order


@dataclass(frozen=True)
class Backend:
    name: str
    factory: StateFactory


# The State backends every machine runs against. The scale-out issue's Redis backend: one more Backend here.
STATE_BACKENDS: tuple[Backend, ...] = (
    Backend("memory-state", memory_state),
    Backend("sqlite-state", sqlite_state),
    *((Backend("redis-state", redis_state),) if redis_available() else ()),
)

PURE = {"bucket": TokenBucket, "breaker": CircuitBreaker, "leased-bucket": LeasedBucket, "shared-breaker": SharedBreaker}
