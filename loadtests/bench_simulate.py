"""`herald simulate`'s own speed: a scenario run in this process, timed by CPU and wall clock (docs/performance.md).

    .venv/bin/python loadtests/bench_simulate.py examples/scenarios/two-outages.toml [--seed 1] [--runs 2]

Prints, per run, the notifications accepted, the CPU and wall seconds, notifications per CPU second and the
simulated seconds per CPU second; the garbage collector tuned as `herald serve` and `herald simulate` tune it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.simulate.run import simulate  # noqa: E402
from actors.simulate.scenario import load_scenario  # noqa: E402
from reactor.gc_policy import tune_for_serving  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    tune_for_serving()
    for run in range(args.runs):
        cpu, wall = time.process_time(), time.perf_counter()
        result = simulate(scenario, args.seed)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        accepted = sum(t["accepted"] for t in result.totals.values())
        print(f"run {run + 1}: {accepted} notifications, {cpu:.2f} s CPU, {wall:.2f} s wall: {accepted / cpu:,.0f} per CPU second, "
              f"{scenario.duration_s / cpu:.1f} simulated s per CPU second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
