import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import pytest  # noqa: E402 (after the path above)


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory):
    """The real engines (Kafka, Redis, PostgreSQL, Cassandra), each started once per pytest session by whoever
    asks first (`engines.get("kafka")`), stopped at its end: the conformance suites and the cluster tests share
    them (tests/conformance/backends.py `Servers`; HERALD_CONFORMANCE_MAY_SKIP lets an unavailable one skip)."""
    from tests.conformance.backends import Servers

    servers = Servers(tmp_path_factory.mktemp("engines"))
    with servers.stack:
        yield servers
