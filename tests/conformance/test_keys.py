"""The KeyStore port's suite (tests/conformance/suites/keys.py) on every backend serving it."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from trio.testing import MockClock

from tests.conformance.backends import Harness, check_id, checks_of
from tests.conformance.suites import keys as suite

PORT = "keys"


@pytest.mark.parametrize("check", checks_of(suite), ids=check_id)
async def test_keys(check: Callable[[Harness[Any]], Any], harness: Harness[Any], clock: MockClock) -> None:
    await check(harness)
