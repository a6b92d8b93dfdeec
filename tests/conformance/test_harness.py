"""The conformance machinery itself: a suite for every port, backends chosen by env var, unavailable servers."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conformance import backends
from tests.conformance.backends import MAY_SKIP, ONLY, PORTS, Backend, BackendUnavailable, Factory, Servers, checks_of


def test_every_port_has_a_suite_run_on_its_backends_and_broken_variants_it_catches() -> None:
    for port in PORTS:
        suite = importlib.import_module(f"tests.conformance.suites.{port}")
        assert len(checks_of(suite)) >= 3, port
        assert importlib.import_module(f"tests.conformance.test_{port}").PORT == port
        assert importlib.import_module(f"tests.conformance.broken.{port}").VARIANTS, port
        assert backends.serving(port), f"no backend serves {port}"


@contextmanager
def down(directory: Path) -> Iterator[None]:
    raise BackendUnavailable("nothing listens on 127.0.0.1:1 (set HERALD_TEST_X)")
    yield


def test_an_unavailable_backend_fails_unless_told_it_may_be_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gone = Backend("gone", {"state": lambda server: Factory(None)}, start=down)  # type: ignore[arg-type]
    monkeypatch.setattr(backends, "BACKENDS", [*backends.BACKENDS, gone])
    monkeypatch.delenv(MAY_SKIP, raising=False)
    assert "gone" in [b.name for b in backends.serving("state")]
    with pytest.raises(BackendUnavailable, match="nothing listens"):
        Servers(tmp_path).get("gone")
    for allowed in ("gone", "kafka,gone", "all"):
        monkeypatch.setenv(MAY_SKIP, allowed)
        with pytest.raises(pytest.skip.Exception, match="backend gone unavailable: nothing listens"):
            Servers(tmp_path).get("gone")
    monkeypatch.setenv(MAY_SKIP, "kafka")
    with pytest.raises(BackendUnavailable):
        Servers(tmp_path).get("gone")
    assert Servers(tmp_path).get("embedded") is None  # no server to start


def test_a_server_that_does_not_start_is_unavailable(tmp_path: Path) -> None:
    @contextmanager
    def broken_server(directory: Path) -> Iterator[str]:
        raise RuntimeError("redis-server is not installed: run scripts/install-test-deps.sh")
        yield "never"

    with pytest.raises(BackendUnavailable, match="redis-server is not installed"):
        with backends.server_or_unavailable(broken_server)(tmp_path):
            pass


def test_the_backends_run_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ONLY, "memory")
    assert [b.name for b in backends.serving("state")] == ["memory"]
    assert backends.serving("bus") == []
    monkeypatch.setenv(ONLY, "embedded, nosuch")
    with pytest.raises(ValueError, match="nosuch"):
        backends.selected()
