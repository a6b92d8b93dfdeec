"""The machines have teeth against the State-backed implementations too: each mutant of tests/kit/mutants.py is caught.

Generation is derandomized (the same runs every time) and shrinking skipped, as in
tests/reactor/test_properties_catch_bugs.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.kit.targets import MUTANTS, TARGETS, Mutant, Target

HUNT = settings(max_examples=150, stateful_step_count=50, derandomize=True, database=None, deadline=None,
                phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_caught(mutant: Mutant) -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(mutant.target.machine(), settings=HUNT)


# The control of the mutants above: the implementations they were made from (the memory and Redis States) pass the
# very settings that catch them. The SQLite State has no mutant; test_machines.py runs it like every target.
@pytest.mark.parametrize("target", [t for t in TARGETS if t.state_backed and "sqlite" not in t.name], ids=lambda t: t.name)
def test_the_real_state_backed_targets_pass_the_hunting_settings(target: Target) -> None:
    # The Redis State: a fifth of the examples (each step is a round trip to a redis-server: 150 took 100 s here)
    run_state_machine_as_test(target.machine(), settings=settings(HUNT, max_examples=30) if "redis" in target.name else HUNT)


def test_every_state_mutant_has_a_state_backed_target_kind() -> None:
    kinds = {t.kind for t in TARGETS if t.state_backed}
    assert {m.target.kind for m in MUTANTS if m.target.state_backed} <= kinds
    assert len([m for m in MUTANTS if m.target.state_backed]) >= 5
