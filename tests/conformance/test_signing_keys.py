"""The SigningKeyStore port's suite (tests/conformance/suites/signing_keys.py) on every backend serving it."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from trio.testing import MockClock

from tests.conformance.backends import Harness, check_id, checks_of
from tests.conformance.suites import signing_keys as suite

PORT = "signing_keys"


@pytest.mark.parametrize("check", checks_of(suite), ids=check_id)
async def test_signing_keys(check: Callable[[Harness[Any]], Any], harness: Harness[Any], clock: MockClock) -> None:
    await check(harness)
