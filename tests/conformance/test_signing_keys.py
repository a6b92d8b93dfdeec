"""The SigningKeyStore port's suite (tests/conformance/suites/signing_keys.py) on every backend serving it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from trio.testing import MockClock

from protocol.keys import SigningKey
from reactor.backends.embedded.signing_keys import read_signing_keys
from reactor.ports import KeyRing

from tests.conformance.backends import Harness, check_id, checks_of
from tests.conformance.suites import signing_keys as suite

PORT = "signing_keys"


@pytest.mark.parametrize("check", checks_of(suite), ids=check_id)
async def test_signing_keys(check: Callable[[Harness[Any]], Any], harness: Harness[Any], clock: MockClock) -> None:
    await check(harness)


def test_a_file_from_before_versions_reads_as_version_1(tmp_path: Path) -> None:
    path = tmp_path / "signing-keys.json"
    path.write_text('{"version": 1, "current": "k1", "keys": [{"kid": "k1", "secret": "00", "created_ms": 5}]}')
    assert read_signing_keys(path) == KeyRing((SigningKey("k1", b"\x00", 5),), "k1", 1)
