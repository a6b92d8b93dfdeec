"""The Kafka backend: the Bus on Apache Kafka (aiokafka, through reactor/asyncio_bridge.py).

    bus.py     the Bus port, the Trio side
    client.py  the coroutines that await aiokafka, run on the bridge's asyncio loop

The URL: `kafka://host:port[,host:port...][?option=value&...]`, the hosts being the bootstrap
servers. Options:

    prefix=NAME            put before every topic and consumer group name (several deployments,
                           or test runs, sharing one cluster); [A-Za-z0-9._-], default none
    replication=N          replication factor of the topics it creates; default min(3, brokers)
    linger_ms=N            how long the producer waits to fill a batch; default 0
    request_timeout_ms=N   how long a request to Kafka may take; default 30000
    heartbeat_ms=N         a member's heartbeat (it hears of a rebalance within this); default 1000
    session_timeout_ms=N   a member silent this long is out of its group; default 10000

The topics (settings.topics) are created at open with their partition counts when missing; an
existing topic must have the configured partition count. `open_backends` serves the bus only.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import trio

from reactor.asyncio_bridge import open_bridge
from reactor.log_limit import RateLimit, limit_loggers
from reactor.backends import Backends, BackendSettings, BackendUnavailable, not_opened

from .bus import KafkaBus, KafkaOptions, UnknownTopic
from .client import KafkaSetupError

SERVES = frozenset({"bus"})
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")
_PREFIX = re.compile(r"[A-Za-z0-9._-]*")
_INTS = {"replication": 1, "linger_ms": 0, "request_timeout_ms": 1, "heartbeat_ms": 1, "session_timeout_ms": 1}  # option: minimum


def parse_url(url: str) -> KafkaOptions:
    """The options of a `kafka://` URL; ValueError naming what is wrong."""
    scheme, separator, rest = url.partition("://")
    if scheme != "kafka" or not separator:
        raise ValueError(f"expected kafka://host:port[,host:port][?options], got {url!r}")
    hosts, _, query = rest.partition("?")
    if not hosts:
        raise ValueError(f"kafka:// needs at least one host:port, got {url!r}")
    for host in hosts.split(","):
        match = _HOST.fullmatch(host)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"kafka:// bootstrap server {host!r} is not host:port (in {url!r})")
    values: dict[str, int | str | None] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if name in values:
            raise ValueError(f"kafka:// option {name} is given twice (in {url!r})")
        if name == "prefix":
            if not _PREFIX.fullmatch(value) or len(value) > 200:
                raise ValueError(f"kafka:// prefix must be up to 200 of [A-Za-z0-9._-], got {value!r}")
            values[name] = value
        elif name in _INTS:
            if not value.isdigit() or int(value) < _INTS[name]:
                raise ValueError(f"kafka:// option {name} must be an integer >= {_INTS[name]}, got {value!r}")
            values[name] = int(value)
        else:
            raise ValueError(f"kafka:// has no option {name!r}; the options are prefix, {', '.join(_INTS)}")
    return KafkaOptions(bootstrap=hosts, **values)  # type: ignore[arg-type]


@asynccontextmanager
async def open_backends(settings: BackendSettings, ports: frozenset[str]) -> AsyncIterator[Backends]:
    """Open the bus on the cluster `settings.urls["bus"]` names; close its clients when the block ends."""
    if ports - SERVES:
        raise BackendUnavailable(f"kafka:// serves the bus only, not {', '.join(sorted(ports - SERVES))}: give those another URL")
    options = parse_url(settings.urls["bus"])
    # Kafka away, aiokafka logs each retry (~110,000 lines in two minutes): a few of each per 10 s, then a count
    unlimit = limit_loggers("aiokafka", RateLimit(burst=5, window_s=10.0))
    try:
        async with _open(settings, options, ports) as backends:
            yield backends
    finally:
        unlimit()


@asynccontextmanager
async def _open(settings: BackendSettings, options: KafkaOptions, ports: frozenset[str]) -> AsyncIterator[Backends]:
    failed: Exception | None = None
    async with open_bridge() as bridge, trio.open_nursery() as nursery:
        bus = KafkaBus(bridge, nursery, options, settings.topics)
        try:
            await bus.open()
        except KafkaSetupError as exc:
            failed = exc
        except Exception as exc:
            failed = BackendUnavailable(f"Kafka at {options.bootstrap} cannot be reached or refused the bus: {exc!r}")
            failed.__cause__ = exc
        try:
            if failed is None:
                yield Backends(bus=bus, **not_opened(ports))
        finally:
            with trio.CancelScope(shield=True):
                await bus.close()
            nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed  # here, not in the nursery: the caller gets it as itself, not in an ExceptionGroup

__all__ = ["KafkaBus", "KafkaOptions", "KafkaSetupError", "UnknownTopic", "open_backends", "parse_url"]
