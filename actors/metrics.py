"""The node's Prometheus metrics: every `herald_*` family, in one registry per node (docs/metrics.md).

Most families are read at scrape time from what the actors already keep (a custom
collector, `NodeMetrics.collect`): the Providers' and gates' counters, the mailboxes'
lengths, the front end's session counts. The hot paths add only plain integer
increments where nothing counted before: the consumers' outcomes per channel
(`Outcomes`), the front end's requests per route (`RequestStats`, fed by
actors/api/request_metrics.py). What lives behind a port (bus lag, DLQ depth, the
shared breaker's state) is read by the node's `metrics` actor (`NodeMetrics.run`) when a
scrape finds its copy older than `CACHE_S`; the scrape waits at most `SCRAPE_WAIT_S`
for it and otherwise answers the last values read (each source's age and health are
families of their own, `herald_metrics_source_*`).

Label values are bounded: routes are the app's rule templates (or `unmatched`), methods
a fixed set (or `other`), channels, partitions, mailboxes and transports are the node's
own. No label takes a user id, a topic name a user chose, a raw path or a notification id.

A node exposes what its role runs: the provider, delivery, bus-lag and DLQ families on
`all` and `worker` nodes, the HTTP and session families on nodes with a front end
(`all`, `api`, `edge`; the sessions on `all` and `edge`), the fan-out families where the
fan-out runs (the `fanout` reader given by actors/app.py).
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from reactor.circuit_breaker import BreakerState
from reactor.mailbox import Mailbox
from reactor.ports import Bus, Store

from .provider import Provider

log = logging.getLogger("herald.metrics")

CACHE_S = 1.0  # values read through a port are read again when a scrape finds them older than this
SCRAPE_WAIT_S = 1.0  # the longest a scrape waits for a fresh read; then it answers the values it has
SOURCE_TIMEOUT_S = 5.0  # one source's read (all partitions' lag, all channels' DLQ depth...) is abandoned after this

# One count per attempt's outcome, as the consumer concludes it (docs/metrics.md).
OUTCOMES = (
    "delivered",  # the provider said delivered (the web session got it, a sandbox sink took it)
    "sent",  # the provider accepted it; delivery is reported later (or never)
    "duplicate_suppressed",  # the send ledger says an earlier attempt sent it: not sent again
    "retry",  # a retryable failure (or a first crash): scheduled again with backoff
    "failed",  # a permanent failure: the channel failed
    "dead_lettered",  # out of attempts, or content the provider refused, or a second crash: in the DLQ
    "stopped",  # a record that waited and that the user's preferences no longer allow when it went out
    "held",  # a record that waited and met quiet hours when it went out: scheduled again
    "undecodable",  # a bus record that is not a delivery: skipped
)
TRANSPORTS = ("websocket", "sse", "poll")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (404, 405, another role's route)
# Request duration buckets, in seconds: long-polls answer after up to 30 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LE = (*(f"{b}" for b in BUCKETS), "+Inf")


def new_outcomes() -> dict[str, int]:
    """A channel's outcome counts, every outcome at 0 (so each is a series from the first scrape)."""
    return dict.fromkeys(OUTCOMES, 0)


@dataclass
class SessionCounts:
    """The front end's subscriber sessions per transport: open now, and opened since start."""

    open: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRANSPORTS, 0))
    opened: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRANSPORTS, 0))

    def enter(self, transport: str) -> None:
        self.open[transport] += 1
        self.opened[transport] += 1

    def leave(self, transport: str) -> None:
        self.open[transport] -= 1


class _Route:
    __slots__ = ("buckets", "total", "statuses")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # per bucket (not cumulative); the last is +Inf
        self.total = 0.0  # seconds
        self.statuses: dict[int, int] = {}


class RequestStats:
    """Requests per (method, route template): counts per status and a duration histogram, as plain integers."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], _Route] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in METHODS else "other", route)
        stats = self._routes.get(key)
        if stats is None:
            stats = self._routes[key] = _Route()
        stats.buckets[bisect_left(BUCKETS, seconds)] += 1
        stats.total += seconds
        stats.statuses[status] = stats.statuses.get(status, 0) + 1

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "herald_http_requests", "HTTP requests (and WebSocket handshakes) answered, by route template and status.",
            labels=["method", "route", "status"],
        )
        durations = HistogramMetricFamily(
            "herald_http_request_duration_seconds",
            "Time from a request's arrival to its response's headers (an SSE stream's opening, a WebSocket's accept).",
            labels=["method", "route"],
        )
        for (method, route), stats in sorted(self._routes.items()):
            for status, count in sorted(stats.statuses.items()):
                requests.add_metric([method, route, str(status)], count)
            cumulative, running = [], 0
            for le, count in zip(_LE, stats.buckets):
                running += count
                cumulative.append((le, running))
            durations.add_metric([method, route], cumulative, stats.total)
        yield requests
        yield durations


@dataclass(frozen=True)
class FanoutProgress:
    """What the fan-out actor reports (actors/app.py passes a reader of it to NodeMetrics)."""

    subscribers_expanded: int  # per-user deliveries put on the bus by fan-outs, since the node started (a counter)
    sends_pending: int  # topic sends whose fan-out is not finished
    subscribers_pending: int  # subscribers still to expand, over those sends


FanoutReader = Callable[[], FanoutProgress | None]


def no_fanout() -> FanoutProgress | None:
    """The fan-out reader of a node that runs no fan-out."""
    return None


@dataclass
class _Cached:
    """One port-backed source's last values."""

    samples: dict[tuple[str, ...], float] = field(default_factory=dict)
    read_at: float | None = None  # trio clock of the last read that finished
    ok: bool = False  # the last attempt finished in time without an error


@dataclass(frozen=True)
class ConsumedTopic:
    """A consumer group this node runs on a topic, and the partitions it holds now."""

    group: str
    topic: str
    partitions: Callable[[], Sequence[int]]


class NodeMetrics(Collector):
    """The collector of a node's families, its registry, and the actor that reads what lives behind ports."""

    def __init__(
        self,
        role: str,
        *,
        bus: Bus,
        store: Store,
        mailboxes: Iterable[Mailbox[Any]] = (),
        providers: Mapping[str, Provider] | None = None,
        outcomes: Mapping[str, dict[str, int]] | None = None,
        consumed: Sequence[ConsumedTopic] = (),
        dlq_channels: Sequence[str] = (),
        requests: RequestStats | None = None,
        sessions: SessionCounts | None = None,
        fanout: FanoutReader | None = None,
    ) -> None:
        self.role = role
        self.bus = bus
        self.store = store
        self.mailboxes = list(mailboxes)
        self.providers = dict(providers or {})  # channel name -> Provider
        self.outcomes = dict(outcomes or {})  # channel name -> outcome -> count
        self.consumed = list(consumed)
        self.dlq_channels = list(dlq_channels)
        self.requests = requests
        self.sessions = sessions
        self.fanout = fanout  # None: this node runs no fan-out (no fan-out families)
        self.registry = CollectorRegistry(auto_describe=False)  # the node's own: never the process-wide default
        self.registry.register(self)
        self._sources: dict[str, Callable[[], Awaitable[dict[tuple[str, ...], float]]]] = {}
        if self.consumed:
            self._sources["bus_lag"] = self._read_lag
        if self.dlq_channels:
            self._sources["dlq"] = self._read_dlq
        if self.providers:
            self._sources["breakers"] = self._read_breakers
        self._cache = {name: _Cached() for name in self._sources}
        self._wanted = trio.Event()
        self._refreshed = trio.Event()
        self._asked_at: float | None = None
        self._stopping = trio.Event()
        self._stop_scope: trio.CancelScope | None = None
        self.scrapes = 0

    # -- scraping ---------------------------------------------------------------------

    async def scrape(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (body, content type) for a scraper's Accept header, with the port-backed values fresh
        (read within the last CACHE_S), or as they were if reading them takes longer than SCRAPE_WAIT_S."""
        await self.fresh(SCRAPE_WAIT_S)
        self.scrapes += 1
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    async def fresh(self, wait_s: float) -> None:
        """Ask the metrics actor for a read of the port-backed sources unless one started within CACHE_S; wait for it."""
        if not self._sources:
            return
        now = trio.current_time()
        if self._asked_at is None or now - self._asked_at >= CACHE_S:
            self._asked_at = now
            self._wanted.set()
        with trio.move_on_after(wait_s):
            await self._refreshed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The metrics actor: read the port-backed sources whenever a scrape asks, each under SOURCE_TIMEOUT_S."""
        task_status.started()
        while not self._stopping.is_set():
            with trio.CancelScope() as scope:
                self._stop_scope = scope
                await self._wanted.wait()
                self._wanted = trio.Event()
                async with trio.open_nursery() as nursery:
                    for name, read in self._sources.items():
                        nursery.start_soon(self._read_source, name, read)
                refreshed, self._refreshed = self._refreshed, trio.Event()
                refreshed.set()

    def stop(self) -> None:
        self._stopping.set()
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    async def _read_source(self, name: str, read: Callable[[], Awaitable[dict[tuple[str, ...], float]]]) -> None:
        cached = self._cache[name]
        ok = False
        try:
            with trio.move_on_after(SOURCE_TIMEOUT_S):
                cached.samples = await read()
                cached.read_at = trio.current_time()
                ok = True
        except Exception as exc:  # a backend's error: the last values stay, marked stale
            log.warning("metrics: reading %s failed: %r", name, exc)
        cached.ok = ok
        if not ok:
            log.warning("metrics: %s not read (error or over %.0f s): its last values are served", name, SOURCE_TIMEOUT_S)

    async def _read_lag(self) -> dict[tuple[str, ...], float]:
        lag: dict[tuple[str, ...], float] = {}
        for consumed in self.consumed:
            for partition in consumed.partitions():
                end = await self.bus.end_offset(consumed.topic, partition)
                committed = await self.bus.committed(consumed.group, consumed.topic, partition)
                lag[(consumed.group, consumed.topic, str(partition))] = max(0, end - committed)
        return lag

    async def _read_dlq(self) -> dict[tuple[str, ...], float]:
        return {(channel,): await self.store.dead_letter_count(channel) for channel in self.dlq_channels}

    async def _read_breakers(self) -> dict[tuple[str, ...], float]:
        states: dict[tuple[str, ...], float] = {}
        for channel, provider in self.providers.items():
            view = await provider.gate.view()
            for state in BreakerState:
                states[(channel, state.value)] = 1.0 if view.state == state.value else 0.0
        return states

    def lag(self) -> dict[tuple[str, ...], float]:
        """Consumer lag as last read: (group, topic, partition) -> records."""
        return dict(self._cache["bus_lag"].samples) if "bus_lag" in self._cache else {}

    def dlq(self) -> dict[tuple[str, ...], float]:
        """DLQ depth as last read: (channel,) -> entries."""
        return dict(self._cache["dlq"].samples) if "dlq" in self._cache else {}

    # -- the families -----------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # families are built at collect time (no names checked at registration)

    def collect(self) -> Iterator[Metric]:
        if self.requests is not None:
            yield from self.requests.families()
        if self.sessions is not None:
            yield from self._session_families(self.sessions)
        if self.outcomes:
            deliveries = CounterMetricFamily(
                "herald_deliveries", "Delivery attempts concluded by this node's consumers, by channel and outcome.",
                labels=["channel", "outcome"],
            )
            for channel, counts in sorted(self.outcomes.items()):
                for outcome, count in counts.items():
                    deliveries.add_metric([channel, outcome], count)
            yield deliveries
        if self.providers:
            yield from self._provider_families()
        yield from self._cached_families()
        yield from self._mailbox_families()
        yield from self._fanout_families()

    @staticmethod
    def _session_families(sessions: SessionCounts) -> Iterator[Metric]:
        open_now = GaugeMetricFamily("herald_sessions_open", "Subscriber sessions open on this node, by transport.", labels=["transport"])
        opened = CounterMetricFamily("herald_sessions_opened", "Subscriber sessions opened on this node, by transport.", labels=["transport"])
        for transport in TRANSPORTS:
            open_now.add_metric([transport], sessions.open[transport])
            opened.add_metric([transport], sessions.opened[transport])
        yield open_now
        yield opened

    def _provider_families(self) -> Iterator[Metric]:
        labels = ["channel"]
        in_flight = GaugeMetricFamily("herald_provider_in_flight", "Attempts at the provider's client now.", labels=labels)
        queued = GaugeMetricFamily(
            "herald_provider_queued", "Attempts the Provider holds that wait for a free slot or their user's earlier one.", labels=labels,
        )
        limit = GaugeMetricFamily("herald_provider_max_in_flight", "The Provider's concurrency limit (provider_max_in_flight).", labels=labels)
        calls = CounterMetricFamily("herald_provider_calls", "Calls made to the provider's client.", labels=labels)
        errors = CounterMetricFamily("herald_provider_client_errors", "Calls whose client raised (taken as retry or crash).", labels=labels)
        throttled = CounterMetricFamily(
            "herald_provider_throttled", "Attempts that waited for a token of the provider's rate limit.", labels=labels,
        )
        deferred = CounterMetricFamily("herald_provider_deferred", "Attempts that waited for the provider's open breaker.", labels=labels)
        for channel, provider in sorted(self.providers.items()):
            in_flight.add_metric([channel], provider.in_flight)
            queued.add_metric([channel], provider.queued)
            limit.add_metric([channel], provider.max_in_flight)
            calls.add_metric([channel], provider.calls)
            errors.add_metric([channel], provider.client_errors)
            gate = provider.gate  # the ResilienceGate's counters (an OpenGate has none)
            throttled.add_metric([channel], getattr(gate, "throttled", 0))
            deferred.add_metric([channel], getattr(gate, "deferred", 0))
        yield from (in_flight, queued, limit, calls, errors, throttled, deferred)

    def _cached_families(self) -> Iterator[Metric]:
        described = {
            "bus_lag": (
                "herald_bus_consumer_lag_records",
                "Records on a partition this node consumes past its group's committed offset (end offset minus committed).",
                ["group", "topic", "partition"],
            ),
            "dlq": ("herald_dlq_entries", "Entries in the channel's dead-letter queue.", ["channel"]),
            "breakers": (
                "herald_provider_breaker_state",
                "The provider's shared circuit breaker: 1 for its current state, 0 for the others.",
                ["channel", "state"],
            ),
        }
        now = trio.current_time()
        up = GaugeMetricFamily(
            "herald_metrics_source_up", "1 if the last read of a port-backed source finished in time, else 0.", labels=["source"],
        )
        age = GaugeMetricFamily(
            "herald_metrics_source_age_seconds", "Age of the values served for a port-backed source (NaN: never read).", labels=["source"],
        )
        for name, cached in self._cache.items():
            family_name, documentation, labels = described[name]
            family = GaugeMetricFamily(family_name, documentation, labels=labels)
            for key, value in sorted(cached.samples.items()):
                family.add_metric(list(key), value)
            yield family
            up.add_metric([name], 1.0 if cached.ok else 0.0)
            age.add_metric([name], math.nan if cached.read_at is None else now - cached.read_at)
        if self._cache:
            yield up
            yield age

    def _mailbox_families(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("herald_mailbox_messages", "Messages waiting in an actor's mailbox.", labels=["mailbox"])
        capacity = GaugeMetricFamily("herald_mailbox_capacity", "The mailbox's bound.", labels=["mailbox"])
        waiting = GaugeMetricFamily("herald_mailbox_senders_waiting", "Senders blocked on a full mailbox.", labels=["mailbox"])
        rejected = CounterMetricFamily("herald_mailbox_rejected", "Messages refused by a full fail-fast mailbox.", labels=["mailbox"])
        for mailbox in sorted(self.mailboxes, key=lambda m: m.name):
            stats = mailbox.statistics()
            depth.add_metric([stats.name], stats.queued)
            capacity.add_metric([stats.name], stats.capacity)
            waiting.add_metric([stats.name], stats.senders_waiting)
            rejected.add_metric([stats.name], stats.rejected)
        yield from (depth, capacity, waiting, rejected)

    def _fanout_families(self) -> Iterator[Metric]:
        expanded = CounterMetricFamily(
            "herald_fanout_subscribers_expanded", "Per-subscriber deliveries that topic fan-outs put on the bus.",
        )
        pending = GaugeMetricFamily("herald_fanout_sends_pending", "Topic sends whose fan-out is not finished.")
        remaining = GaugeMetricFamily("herald_fanout_subscribers_pending", "Subscribers still to expand, over the pending topic sends.")
        if self.fanout is None:
            return
        progress = self.fanout()
        if progress is not None:
            expanded.add_metric([], progress.subscribers_expanded)
            pending.add_metric([], progress.sends_pending)
            remaining.add_metric([], progress.subscribers_pending)
        yield from (expanded, pending, remaining)
