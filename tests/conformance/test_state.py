"""The State port's suite (tests/conformance/suites/state.py) on every backend serving it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from trio.testing import MockClock

from tests.conformance.backends import Harness, check_id, checks_of
from tests.conformance.suites import state as suite
from tests.conformance.test_catches_broken import failures

PORT = "state"


@pytest.mark.parametrize("check", checks_of(suite), ids=check_id)
async def test_state(check: Callable[[Harness[Any]], Any], harness: Harness[Any], clock: MockClock) -> None:
    await check(harness)


# The broken variants are the embedded and memory States with one mistake each, so this control runs on those
# two; Redis runs every check on its own above (the loop there only repeated them, on a real clock, for ~25 s).
@pytest.mark.backends("embedded", "memory")
async def test_the_real_states_pass_the_loop_that_catches_broken_ones(harness: Harness[Any], place_dir: Path,
                                                                      clock: MockClock) -> None:
    """The control of test_catches_broken.py: its loop (every check in turn, on one clock) finds nothing wrong here."""
    loop = place_dir / "loop"
    loop.mkdir()
    assert await failures(PORT, harness.factory, loop, all_checks=True) == {}
