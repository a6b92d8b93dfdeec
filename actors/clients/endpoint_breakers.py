"""A circuit breaker per webhook endpoint, so that one user's failing endpoint holds back its own deliveries only.

The webhook channel's "provider" is every user's own server: a dead one says nothing about the others. So its
failures (a 5xx, a timeout, a refused connection) count against a breaker of that endpoint's origin (scheme, host,
port: the server, whichever of its paths a user gave), never against the channel's (the Provider's gate). While an
origin's breaker is open, a delivery to it is not sent: its attempt ends at once as the endpoint's retryable failure,
retried on the channel's backoff as a failed call would have been (no delivery gives up sooner than it would without
the breaker: only the calls into the dead server are saved, and the slots their timeouts held). After the open
timeout one delivery probes; its success closes the breaker.

The machine is reactor/circuit_breaker.py's. Only breakers with something to remember are kept (a closed one with
no failure counted is dropped), at most `max_endpoints` of them, the least recently used forgotten first: memory is
bounded by the endpoints failing now, whatever URLs users give. The breakers are this process's: each worker of a
cluster learns an endpoint's failures on its own (at most `failure_threshold` calls each before its breaker opens).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

import trio

from reactor.circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """The server a URL reaches: scheme://host:port (host lowercased, the default port written out)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # checked before (protocol/webhook_url.py); the whole URL stands for itself then
        return url
    return f"{scheme}://{(parts.hostname or '').lower()}:{port or DEFAULT_PORTS.get(scheme, 0)}"


class EndpointBreakers:
    """One CircuitBreaker per origin, made on its first failure."""

    def __init__(self, config: BreakerConfig, *, max_endpoints: int = 10_000, clock: Callable[[], float] | None = None) -> None:
        if max_endpoints < 1:
            raise ValueError(f"max_endpoints must be at least 1, got {max_endpoints!r}")
        self.config = config
        self.max_endpoints = max_endpoints
        self._clock = clock or trio.current_time
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()
        self.rejected = 0  # deliveries not sent because their endpoint's breaker was open
        self.opened = 0  # times an endpoint's breaker opened

    def __len__(self) -> int:
        return len(self._breakers)

    def state(self, key: str) -> BreakerState:
        breaker = self._breakers.get(key)
        return BreakerState.CLOSED if breaker is None else breaker.state_at(self._clock())

    def admit(self, key: str) -> bool:
        """May a call to this origin go out now? In half-open, True marks it the probe (then report its end)."""
        breaker = self._breakers.get(key)
        if breaker is None:
            return True
        self._breakers.move_to_end(key)
        if breaker.allow(self._clock()):
            return True
        self.rejected += 1
        return False

    def succeeded(self, key: str) -> None:
        """The endpoint answered (a 4xx too: it is up)."""
        breaker = self._breakers.get(key)
        if breaker is None:
            return
        breaker.record_success(self._clock())
        if breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0:
            del self._breakers[key]  # nothing to remember

    def failed(self, key: str) -> None:
        """The endpoint failed (a 5xx, a timeout, a connection error)."""
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(self.config, max_pending_transitions=4)
            while len(self._breakers) > self.max_endpoints:
                self._breakers.popitem(last=False)
        else:
            self._breakers.move_to_end(key)
        before = breaker.state
        breaker.record_failure(self._clock())
        if breaker.state is BreakerState.OPEN and before is not BreakerState.OPEN:
            self.opened += 1

    def released(self, key: str) -> None:
        """The call ended with no word on the endpoint's health (cancelled, throttled): a probe's slot is freed."""
        breaker = self._breakers.get(key)
        if breaker is not None:
            breaker.release_probe()
