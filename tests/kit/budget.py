"""The budget and the configuration `herald check properties` hands to the property machines (by environment).

HERALD_PROPERTIES_EXAMPLES: steps per machine (spread over runs of HERALD_PROPERTIES_STEPS steps each); unset, the
suite's own small budget. HERALD_PROPERTIES_CONFIG: a herald.toml whose channel limits the machines run with
(tests/kit/configured.py). HERALD_PROPERTIES_TARGET: run only the targets whose names contain this.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, Phase, settings

SUITE_STEPS = 1_000  # per machine in the ordinary test run: the command's default is ten times that
DEFAULT_STEPS = 10_000  # per machine, `herald check properties` without --examples
STEPS_PER_RUN = 50


def steps_per_run() -> int:
    return max(1, int(os.environ.get("HERALD_PROPERTIES_STEPS", STEPS_PER_RUN)))


def steps_per_machine() -> int:
    return max(1, int(os.environ.get("HERALD_PROPERTIES_EXAMPLES", SUITE_STEPS)))


def machine_settings() -> settings:
    """Hypothesis settings for one machine: runs of `steps_per_run` steps until the budget of steps is spent.

    No example database: a run is fixed by its seed (--hypothesis-seed), so a failure replays by seed alone.
    """
    per_run = steps_per_run()
    return settings(
        max_examples=max(1, math.ceil(steps_per_machine() / per_run)),
        stateful_step_count=per_run,
        deadline=None,
        database=None,
        report_multiple_bugs=False,  # one failure, shrunk to its shortest step list
        # No explain phase: it reruns a stateful failure hundreds of times (minutes) to annotate what may vary.
        phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def selected(name: str, known: frozenset[str] = frozenset()) -> bool:
    """Chosen by HERALD_PROPERTIES_TARGET: a name given exactly, or one containing a part that names nothing exactly."""
    wanted = os.environ.get("HERALD_PROPERTIES_TARGET", "")
    if not wanted:
        return True
    return any(part == name or (part and part not in known and part in name) for part in wanted.split(","))


def explicitly_chosen() -> bool:
    return bool(os.environ.get("HERALD_PROPERTIES_TARGET"))


def show_statistics() -> bool:
    """`herald check properties` prints Hypothesis's statistics of each machine as it finishes."""
    return os.environ.get("HERALD_PROPERTIES_STATISTICS") == "1"
