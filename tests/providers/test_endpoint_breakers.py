"""actors/clients/endpoint_breakers.py: a breaker per webhook endpoint (origin), on a clock the test moves."""

from __future__ import annotations

import pytest

from actors.clients.endpoint_breakers import EndpointBreakers, origin
from reactor.circuit_breaker import BreakerConfig, BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breakers(clock: Clock, **kwargs: int) -> EndpointBreakers:
    return EndpointBreakers(BreakerConfig(failure_threshold=3, open_timeout_s=60, success_threshold=1), clock=clock, **kwargs)


def test_origin_names_the_server_whatever_the_path() -> None:
    assert origin("https://Hooks.Example.org/a/b?x=1") == "https://hooks.example.org:443"
    assert origin("http://example.org/x") == origin("http://EXAMPLE.org:80/y") == "http://example.org:80"
    assert origin("https://example.org:8443/x") == "https://example.org:8443"
    assert origin("https://[::1]:9/x") == "https://::1:9"
    assert origin("http://example.org:99999/x") == "http://example.org:99999/x"  # a port urlsplit refuses: the URL itself


def test_one_failing_endpoint_opens_its_own_breaker_only_then_a_probe_closes_it() -> None:
    clock = Clock()
    b = breakers(clock)
    dead, live = origin("https://dead.example/x"), origin("https://live.example/x")
    for _ in range(3):
        assert b.admit(dead)
        b.failed(dead)
        assert b.admit(live)
        b.succeeded(live)
    assert b.state(dead) is BreakerState.OPEN and b.state(live) is BreakerState.CLOSED
    assert not b.admit(dead) and b.admit(live)
    assert (b.rejected, b.opened) == (1, 1)
    clock.now = 59.9
    assert not b.admit(dead)
    clock.now = 60.0
    assert b.admit(dead)  # the probe
    assert not b.admit(dead)  # one probe at a time
    b.succeeded(dead)
    assert b.state(dead) is BreakerState.CLOSED and b.admit(dead) and b.admit(dead)
    assert len(b) == 0  # nothing left to remember: a closed breaker with no failure is dropped


def test_a_failed_probe_reopens_and_a_released_one_lets_the_next_probe_go() -> None:
    clock = Clock()
    b = breakers(clock)
    for _ in range(3):
        b.failed("o")
    clock.now = 60
    assert b.admit("o")
    b.released("o")  # cancelled, or throttled: no word on its health
    assert b.admit("o")
    b.failed("o")
    assert b.state("o") is BreakerState.OPEN and not b.admit("o")
    assert b.opened == 2


def test_a_success_between_failures_resets_the_count() -> None:
    b = breakers(Clock())
    for _ in range(5):
        b.failed("o")
        b.failed("o")
        b.succeeded("o")
    assert b.state("o") is BreakerState.CLOSED and b.opened == 0 and len(b) == 0


def test_memory_is_bounded_by_the_least_recently_used() -> None:
    b = breakers(Clock(), max_endpoints=3)
    for name in "abcd":
        b.failed(name)
    assert len(b) == 3 and b.state("a") is BreakerState.CLOSED  # forgotten: its one failure with it
    for _ in range(2):
        b.failed("b")
    assert b.state("b") is BreakerState.OPEN
    b.failed("e")  # "c" is the least recently used now
    assert len(b) == 3 and b.state("b") is BreakerState.OPEN


def test_max_endpoints_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EndpointBreakers(BreakerConfig(), max_endpoints=0)
