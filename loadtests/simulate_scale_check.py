"""How faithful is a scaled-down `herald simulate`? A scenario run exactly against the same at scale N (docs/simulate.md).

    .venv/bin/python loadtests/simulate_scale_check.py loadtests/scenarios/hour-100-two-outages.toml --scale 10 25 50 \
        [--seed 1] [--minutes 25] [--even] [--markdown]

Each run is `simulate()` as `herald simulate` runs it (the collector tuned the same way), the scaled ones through
actors/simulate/scale.py: the volumes / N, the times as they are, every count of the rows multiplied back by N. Prints
the CPU of each run, then per scale and channel:

* per count column: the run's total exact and scaled and its relative error; the per-minute difference of the scaled
  row from the exact one, largest (and its minute) and mean of the absolute values, and the mean relative to the
  exact column's mean per minute;
* the delays p50 and p99: the per-minute difference, largest and mean (minutes where both runs delivered);
* the breaker: per outage of the channel's provider (from its start to the next outage's, or the end), the
  transitions exact and scaled and the minute the breaker first opened and last closed; and the minutes whose
  end-of-minute state differs.

--even runs both with `arrivals = "even"`: without the Poisson noise, whose variance per minute a scale of N multiplies
by N (the scaled run draws 1/N of the arrivals), what is left is what the scaling itself changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import tomllib
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.simulate.run import MinuteRow, Result, simulate  # noqa: E402
from actors.simulate.scale import COUNT_COLUMNS  # noqa: E402
from actors.simulate.scenario import Scenario, parse_scenario  # noqa: E402
from reactor.gc_policy import tune_for_serving  # noqa: E402


def run(scenario: Scenario, seed: int, scale: int) -> tuple[Result, float]:
    scenario = dataclasses.replace(scenario, scale=scale)
    cpu = time.process_time()
    result = simulate(scenario, seed)
    return result, time.process_time() - cpu


def transitions(rows: list[MinuteRow], first: int, last: int) -> tuple[dict[str, int], int | None, int | None]:
    """The transitions in minutes first..last (counted by kind), the minute of the first opening and of the last closing."""
    counted: dict[str, int] = {}
    opened = closed = None
    for r in rows:
        if not first <= r.minute <= last or not r.transitions:
            continue
        for part in r.transitions.split(";"):
            kind, count = part.rsplit(":", 1)
            counted[kind] = counted.get(kind, 0) + int(count)
            if kind == "closed->open" and opened is None:
                opened = r.minute
            if kind == "half_open->closed":
                closed = r.minute
    return counted, opened, closed


def _short(counted: dict[str, int]) -> str:
    names = {"closed->open": "opened", "open->half_open": "probed", "half_open->open": "reopened", "half_open->closed": "closed"}
    return ", ".join(f"{names.get(k, k)} {v}" for k, v in sorted(counted.items(), key=lambda kv: list(names).index(kv[0])
                                                                    if kv[0] in names else 9))


def compare(scenario: Scenario, exact: Result, scaled: Result, channel: str, markdown: bool) -> list[str]:
    e_rows = [r for r in exact.rows if r.channel == channel]
    s_rows = [r for r in scaled.rows if r.channel == channel]
    out = []
    if markdown:
        out.append("| column | total exact | total scaled | total error | per minute: largest diff (minute) | mean abs diff | "
                   "mean diff / mean per minute |")
        out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for column in COUNT_COLUMNS:
        e = [getattr(r, column) for r in e_rows]
        s = [getattr(r, column) for r in s_rows]
        diffs = [abs(a - b) for a, b in zip(e, s)]
        worst = max(range(len(diffs)), key=lambda i: (diffs[i], -i))
        total_e = e[-1] if column == "pending" else sum(e)  # pending is a level: its last minute's
        total_s = s[-1] if column == "pending" else sum(s)
        rel = (total_s - total_e) / total_e if total_e else (0.0 if total_s == 0 else float("inf"))
        level = mean(e) or 1
        what = "at the end" if column == "pending" else "total"
        if markdown:
            out.append(f"| {column} | {total_e:,} | {total_s:,} | {rel:+.1%} | {diffs[worst]:,} ({e_rows[worst].minute}) | "
                       f"{mean(diffs):,.0f} | {mean(diffs) / level:.1%} |")
        else:
            out.append(f"  {column:16s} {what} {total_e:>10,} exact {total_s:>10,} scaled ({rel:+.1%}); per minute: largest "
                       f"difference {diffs[worst]:,} (minute {e_rows[worst].minute}: {e[worst]:,} / {s[worst]:,}), mean "
                       f"{mean(diffs):,.0f} ({mean(diffs) / level:.1%} of the column's mean)")
    for column in ("delay_p50_ms", "delay_p99_ms"):
        pairs = [(r.minute, getattr(r, column), getattr(t, column)) for r, t in zip(e_rows, s_rows)
                 if getattr(r, column) is not None and getattr(t, column) is not None]
        if not pairs:
            continue
        diffs = [abs(a - b) for _, a, b in pairs]
        worst = max(range(len(diffs)), key=lambda i: (diffs[i], -i))
        m, a, b = pairs[worst]
        line = (f"largest difference {diffs[worst] / 1000:.1f} s (minute {m}: {a / 1000:.1f} / {b / 1000:.1f} s), mean "
                f"{mean(diffs) / 1000:.2f} s over {len(pairs)} minutes (exact mean {mean(a for _, a, _ in pairs) / 1000:.2f} s)")
        out.append(f"| {column} | | | | {line} | | |" if markdown else f"  {column:16s} per minute: {line}")
    outages = scenario.providers[next(c for c in scenario.channels if c.value == channel)].outages
    starts = sorted(int(o.at_min) + 1 for o in outages)
    for n, first in enumerate(starts):
        last = starts[n + 1] - 1 if n + 1 < len(starts) else len(e_rows)
        ce, oe, ke = transitions(e_rows, first, last)
        cs, os_, ks = transitions(s_rows, first, last)
        line = (f"exact {_short(ce)} (opened in minute {oe}, closed in {ke}); scaled {_short(cs)} (opened in minute {os_}, "
                f"closed in {ks})")
        out.append(f"| outage {n + 1} (minutes {first}-{last}) | | | | {line} | | |" if markdown else
                   f"  outage {n + 1} (minutes {first}-{last}): {line}")
    states = [r.minute for r, t in zip(e_rows, s_rows) if r.breaker != t.breaker]
    out.append(f"  breaker state at a minute's end differs in {len(states)} of {len(e_rows)} minutes {states[:8]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--scale", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, help="cut the scenario at this minute")
    parser.add_argument("--even", action="store_true", help='arrivals = "even" (no Poisson noise, whose variance N multiplies)')
    parser.add_argument("--markdown", action="store_true", help="the count columns as a Markdown table")
    args = parser.parse_args()
    raw: dict[str, Any] = tomllib.loads(args.scenario.read_text(encoding="utf-8"))
    raw.pop("scale", None)  # the exact run is the reference: each scale is given here
    if args.minutes:
        raw.pop("duration_h", None)
        raw["duration_min"] = args.minutes
    if args.even:
        raw["arrivals"] = "even"
    scenario = parse_scenario(raw)
    tune_for_serving()
    logging.getLogger("herald").setLevel(logging.ERROR)  # the breaker's transitions are in the rows
    exact, exact_cpu = run(scenario, args.seed, 1)
    print(f"{args.scenario} ({scenario.duration_s / 60:g} simulated minutes, seed {args.seed}"
          f"{', even arrivals' if args.even else ''}): exact {exact_cpu:.1f} s CPU "
          f"({exact.notifications_run:,} notifications, {1e6 * exact_cpu / exact.notifications_run:.0f} us each)")
    for scale in args.scale:
        scaled, cpu = run(scenario, args.seed, scale)
        print(f"\nscale {scale}: {cpu:.1f} s CPU, {exact_cpu / cpu:.1f}x less ({scaled.notifications_run:,} notifications run, "
              f"{1e6 * cpu / scaled.notifications_run:.0f} us each)")
        for channel in (c.value for c in scenario.channels):
            print(f" {channel}:")
            print("\n".join(compare(scenario, exact, scaled, channel, args.markdown)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
