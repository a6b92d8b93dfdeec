"""Fixtures of the conformance suites: every test of a module with `PORT = "<port>"` runs once per backend serving it.

    harness   a Harness for the backend (tests/conformance/backends.py): what the suites' checks take
    backend   the port itself, opened on a fresh place (for a plain test: `async def test_x(backend): ...`)
    clock     the MockClock the test runs under: virtual time for a backend on Trio's clock, real speed
              for one with a clock of its own (a test that sleeps asks for it, so that pytest-trio uses it)
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from trio.testing import MockClock

pytest.register_assert_rewrite("tests.conformance.suites")  # a failed check says what it compared

from tests.conformance.backends import BUS_TOPICS, Harness, Place, Servers, serving, set_clock  # noqa: E402 (after the line above)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        port = getattr(metafunc.module, "PORT", None)
        if port is None:
            raise pytest.UsageError(f"{metafunc.module.__name__} uses the conformance fixtures: it must set PORT = '<port>'")
        names = [b.name for b in serving(port)]
        only = metafunc.definition.get_closest_marker("backends")
        if only is not None:
            names = [name for name in names if name in only.args]
        metafunc.parametrize("backend_name", names, ids=names, scope="function")


@pytest.fixture(scope="session")
def conformance_servers(engines: Servers) -> Servers:
    """The session's engines (tests/conftest.py), shared with the cluster tests: each starts once per session."""
    return engines


RAM = Path("/dev/shm")


@pytest.fixture(scope="session")
def conformance_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the checks' places go: a RAM file system where there is one. The suites check the ports'
    semantics (a crash is a cancelled handle, not a power cut); on disk, fsyncs took 3/4 of their time.
    The embedded backends' durability on a real disk is tested beside them (tests/reactor/test_bus_embedded.py)."""
    if RAM.is_dir():
        root = Path(tempfile.mkdtemp(prefix="herald-conformance-", dir=RAM))
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("conformance")


@pytest.fixture
def place_dir(conformance_root: Path) -> Path:
    """A fresh directory for one test."""
    return Path(tempfile.mkdtemp(dir=conformance_root))


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


def harness_for(port: str, backend_name: str, server: Any, directory: Path, clock: MockClock) -> Harness[Any]:
    """A Harness of `port` on the backend, on a fresh place; sets the clock as the backend needs it."""
    backend = next(b for b in serving(port) if b.name == backend_name)
    factory = backend.ports[port](server)
    set_clock(clock, factory)
    directory.mkdir(parents=True, exist_ok=True)
    return Harness(backend_name, factory, Place(directory, f"hc{uuid.uuid4().hex[:12]}", BUS_TOPICS))


@pytest.fixture
def harness(request: pytest.FixtureRequest, backend_name: str, clock: MockClock, place_dir: Path,
            conformance_servers: Servers) -> Harness[Any]:
    return harness_for(request.module.PORT, backend_name, conformance_servers.get(backend_name), place_dir, clock)


@pytest.fixture
async def backend(harness: Harness[Any]) -> AsyncIterator[Any]:
    async with harness.open() as port:
        yield port
