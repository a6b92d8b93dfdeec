"""Every implementation of the bucket and the breaker under the same machines (tests/kit/targets.py).

In the suite: a small budget (tests/kit/budget.py, SUITE_STEPS). `herald check properties` runs this file with its
budget, seed and configuration.
"""

from __future__ import annotations

import pytest
from hypothesis.stateful import run_state_machine_as_test

from tests.kit.budget import explicitly_chosen, machine_settings, selected
from tests.kit.configured import configured_targets
from tests.kit.targets import MUTANTS, TARGETS, Target

# Every target; a mutant only when asked for by name (HERALD_PROPERTIES_TARGET): it is meant to fail.
CHOSEN = [t for t in TARGETS if selected(t.name)] + [m.target for m in MUTANTS if selected(m.name) and explicitly_chosen()]


@pytest.mark.parametrize("target", CHOSEN + configured_targets(), ids=lambda t: t.name)
def test_machine(target: Target) -> None:
    run_state_machine_as_test(target.machine(), settings=machine_settings())
