"""Would an aggregated `herald simulate` be faithful? An exact run against runs whose messages stand for k notifications.

    .venv/bin/python loadtests/simulate_aggregation_check.py loadtests/scenarios/hour-100-two-outages.toml \
        --minutes 25 --k 10 20 [--seed 1]

The aggregated run is the same scenario with every notification standing for k (docs/simulate.md, "How long it
takes"): the traffic's rates divided by k; each channel's bucket in units of k notifications (capacity and refill
divided by k); its breaker counting k outcomes per message (failure and success thresholds: ceil(F / k), ceil(S / k));
the Provider's slots divided by k (at least one); a throttling window's rate divided by k; every count of the rows
multiplied by k (the delays, the breaker's state and transitions as they are). Nothing in Herald's own path changes:
what is weighted is the scenario. Prints, per k: the CPU of each run, and per column the largest difference of a
minute's figure from the exact run's, the minute it is at, and the totals. Not shipped in `herald simulate`:
docs/performance.md, "herald simulate", says why.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
import tomllib
import logging
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.config import Config  # noqa: E402
from actors.simulate.run import MinuteRow, simulate  # noqa: E402
from actors.simulate.scenario import parse_scenario  # noqa: E402
from reactor.gc_policy import tune_for_serving  # noqa: E402

COUNTS = ("accepted", "delivered", "deferred_bucket", "deferred_breaker", "retried", "dead_lettered", "failed", "pending")


def aggregated(raw: dict[str, Any], k: int) -> dict[str, Any]:
    """The scenario with every message standing for k notifications (the module's docstring)."""
    out = copy.deepcopy(raw)
    for curve in out["traffic"]:
        for key in ("rate", "from_rate", "to_rate", "peak"):
            if key in curve:
                curve[key] = curve[key] / k
    herald = out.setdefault("herald", {})
    for limits in herald.get("limits", {}).values():
        limits["capacity"] = limits["capacity"] / k
        limits["refill_per_s"] = limits["refill_per_s"] / k
        limits["failure_threshold"] = math.ceil(limits["failure_threshold"] / k)
        limits["success_threshold"] = math.ceil(limits["success_threshold"] / k)
    slots = herald.get("provider_max_in_flight", Config().provider_max_in_flight)
    herald["provider_max_in_flight"] = {c: max(1, math.ceil(n / k)) for c, n in slots.items()}
    for provider in out.get("providers", {}).values():
        for throttle in provider.get("throttles", []):
            throttle["rate_per_s"] = throttle["rate_per_s"] / k
    return out


def run(raw: dict[str, Any], seed: int, k: int) -> tuple[list[MinuteRow], float]:
    scenario = parse_scenario(raw)
    cpu = time.process_time()
    result = simulate(scenario, seed)
    cpu = time.process_time() - cpu
    rows = [dataclasses.replace(r, **{c: getattr(r, c) * k for c in COUNTS}) for r in result.rows]
    return rows, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--minutes", type=float, help="cut the scenario at this minute")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--even", action="store_true", help="arrivals = \"even\" (no Poisson noise, whose variance k multiplies)")
    args = parser.parse_args()
    raw = tomllib.loads(args.scenario.read_text(encoding="utf-8"))
    if args.minutes:
        raw.pop("duration_h", None)
        raw["duration_min"] = args.minutes
    if args.even:
        raw["arrivals"] = "even"
    tune_for_serving()
    logging.getLogger("herald").setLevel(logging.ERROR)  # the breaker's transitions are in the rows
    exact, exact_cpu = run(raw, args.seed, 1)
    print(f"exact: {exact_cpu:.1f} s CPU")
    for k in args.k:
        rows, cpu = run(aggregated(raw, k), args.seed, k)
        print(f"k = {k}: {cpu:.1f} s CPU ({exact_cpu / cpu:.1f}x less)")
        for column in (*COUNTS, "delay_p50_ms", "delay_p99_ms"):
            diffs = [(abs((getattr(a, column) or 0) - (getattr(e, column) or 0)), e.minute, getattr(e, column), getattr(a, column))
                     for e, a in zip(exact, rows)]
            worst = max(diffs)
            total_e = sum(getattr(e, column) or 0 for e in exact)
            total_a = sum(getattr(a, column) or 0 for a in rows)
            what = "" if column.startswith("delay") else f"; over the run {total_e} exact, {total_a} aggregated"
            print(f"  {column:17s} largest difference {worst[0]:7d} at minute {worst[1]:3d} ({worst[2]} exact, {worst[3]} aggregated){what}")
        states = [(e.minute, e.breaker, a.breaker) for e, a in zip(exact, rows) if e.breaker != a.breaker]
        transitions = [(e.minute, e.transitions, a.transitions) for e, a in zip(exact, rows) if e.transitions != a.transitions]
        print(f"  breaker state differs at {len(states)} minutes {states[:6]}; transitions at {len(transitions)}: {transitions[:6]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
