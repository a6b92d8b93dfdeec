"""Every implementation of the bucket and the breaker under the same machines (tests/kit/targets.py).

In the suite: a small budget (tests/kit/budget.py, SUITE_STEPS). `herald check properties` runs this file with its
budget, seed and configuration.
"""

from __future__ import annotations

import sys

import pytest
from hypothesis.statistics import collector, describe_statistics
from hypothesis.stateful import run_state_machine_as_test

from tests.kit.budget import explicitly_chosen, machine_settings, selected, show_statistics
from tests.kit.configured import configured_targets
from tests.kit.targets import MUTANTS, TARGETS, Target

# Every target; a mutant only when asked for by name (HERALD_PROPERTIES_TARGET): it is meant to fail.
KNOWN = frozenset([t.name for t in TARGETS] + [m.name for m in MUTANTS])
CHOSEN = [t for t in TARGETS if selected(t.name, KNOWN)] + [
    m.target for m in MUTANTS if explicitly_chosen() and (selected(m.name, KNOWN) or selected(m.target.name, KNOWN))
]


def readable(statistics: str) -> str:
    """Hypothesis's statistics without its events about retried rule draws (a repr of every rule, each)."""
    lines = [line for line in statistics.splitlines() if "Retried draw from" not in line]
    kept = [line for i, line in enumerate(lines)
            if not (line.strip() == "- Events:" and (i + 1 == len(lines) or not lines[i + 1].strip().startswith("*")))]
    return "\n".join(line for line in kept if line.strip()) + "\n"


@pytest.mark.parametrize("target", CHOSEN + configured_targets(), ids=lambda t: t.name)
def test_machine(target: Target) -> None:
    stats: list[str] = []
    try:
        with collector.with_value(lambda found: stats.append(readable(describe_statistics(found)))):
            run_state_machine_as_test(target.machine(), settings=machine_settings())
    finally:
        if show_statistics():
            print(f"\n{target.name}:\n" + "".join(stats), file=sys.__stdout__, flush=True)
