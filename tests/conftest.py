import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# trio-asyncio (imported by the Kafka bus's bridge, reactor/asyncio_bridge.py) replaces asyncio's
# loop policy for the whole process on import: outside Trio, asyncio.new_event_loop() then makes
# its greenlet-driven SyncTrioEventLoop, which Playwright's sync API (tests/browser) and asyncio
# servers run in test threads cannot use ("You can't nest calls to run_until_complete()"). Whatever
# imports it first, asyncio outside Trio stays stock asyncio in this thread: trio-asyncio forwards
# to a policy set here, and inside Trio it keeps its own (the bridge's open_loop is unaffected).
import asyncio  # noqa: E402

import trio_asyncio  # noqa: E402,F401

asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory):
    """The real engines (Kafka, Redis, PostgreSQL, Cassandra), each started once per pytest session by whoever
    asks first (`engines.get("kafka")`), stopped at its end: the conformance suites and the cluster tests share
    them (tests/conformance/backends.py `Servers`; HERALD_CONFORMANCE_MAY_SKIP lets an unavailable one skip)."""
    from tests.conformance.backends import Servers

    servers = Servers(tmp_path_factory.mktemp("engines"))
    with servers.stack:
        yield servers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The browser tests run last. Playwright's sync API drives an asyncio loop of its own on this thread; after
    it ran, the Kafka bus's trio-asyncio loop in a later test of the same process waited forever (why is not
    understood yet; the asyncio policy set above did not prevent it). Last, nothing of the bridge runs after them.
    `make test` runs the rest on two processes (pytest-xdist), which keep no order between files: the browser tests
    run after them in a pytest of their own (Makefile)."""
    browser = [item for item in items if item.nodeid.startswith("tests/browser/")]
    if browser:
        items[:] = [item for item in items if not item.nodeid.startswith("tests/browser/")] + browser
