"""The Store port's suite (tests/conformance/suites/store.py) on every backend serving it."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from trio.testing import MockClock

from tests.conformance.backends import Harness, check_id, checks_of
from tests.conformance.suites import store as suite

PORT = "store"


@pytest.mark.parametrize("check", checks_of(suite), ids=check_id)
async def test_store(check: Callable[[Harness[Any]], Any], harness: Harness[Any], clock: MockClock) -> None:
    await check(harness)
