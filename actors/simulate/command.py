"""`herald simulate SCENARIO.toml [--seed N] [--scale N] [--out DIR] [--json]`: run a scenario, print its table, write the CSV and PNG.

The table (stdout) and the files depend only on the scenario and the seed; the speed of the
run (simulated seconds per wall second, notifications per wall second) goes to stderr, since
it does not. With --json, stdout is one JSON line (the files, the totals, the speed) and the
table goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path


class SimulateError(Exception):
    """What the command reports in one line (a bad scenario, an unwritable --out, matplotlib missing)."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    simulate = sub.add_parser(
        "simulate", help="run a traffic scenario through the delivery path under a mock clock (docs/simulate.md)",
        description="Runs Herald's delivery path (Ingress, consumers, Providers with their bucket and breaker, retries, "
        "dead-letter queue, Recorder) on in-memory ports under a virtual clock, with scripted providers, for the "
        "scenario's traffic. Prints a table per simulated minute; writes <out>/<name>.csv and <out>/<name>.png.",
    )
    simulate.add_argument("scenario", type=Path, help="the scenario file (docs/simulate.md; examples/scenarios/)")
    simulate.add_argument("--seed", type=int, default=1, help="every random draw comes from it (default 1)")
    simulate.add_argument("--scale", type=int, default=None, metavar="N",
                          help="run 1/N of the scenario's volumes (rates, buckets, slots, users), its times as they are, and "
                          "multiply the counts back by N (default: the scenario's `scale`, else 1: every notification)")
    simulate.add_argument("--out", type=Path, default=Path("."), help="where the CSV and PNG go (default: here)")
    simulate.add_argument("--json", action="store_true", help="one JSON line on stdout (files, totals, speed); the table on stderr")
    simulate.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    from .scenario import ScenarioError, load_scenario

    try:
        import matplotlib  # noqa: F401  (checked before a long run, not after it)
    except ModuleNotFoundError:
        raise SimulateError("the PNG chart needs matplotlib: pip install 'herald[simulate]'") from None
    try:
        scenario = load_scenario(args.scenario)
        from .run import herald_config
        from .scale import scale_scenario

        herald_config(scenario)
        if args.scale is not None:
            scenario = dataclasses.replace(scenario, scale=args.scale)
        try:
            scale_scenario(scenario)
        except ScenarioError as exc:  # the scenario's own scale, or the --scale that overrides it
            raise ScenarioError(f"{args.scenario}: {'--' if args.scale is not None else ''}{exc}") from None
    except ScenarioError as exc:
        raise SimulateError(f"scenario error: {exc}") from None
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulateError(f"--out {args.out}: cannot create it: {exc.strerror or exc}") from None
    from reactor.gc_policy import tune_for_serving

    from .report import table, write_csv, write_png
    from .run import simulate

    # the actors' log lines (a breaker opening, a deferral) are in the table: only errors are shown
    logging.getLogger("herald").setLevel(logging.ERROR)
    tune_for_serving()  # as `herald serve` does: fewer full collections of the long-lived actors (about 8 % here)
    began, cpu = time.perf_counter(), time.process_time()
    result = simulate(scenario, args.seed)
    wall_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in args.scenario.stem)
    csv_path, png_path = args.out / f"{stem}.csv", args.out / f"{stem}.png"
    write_csv(result.rows, csv_path, result.scale)
    write_png(result, png_path)
    accepted, run = sum(t["accepted"] for t in result.totals.values()), result.notifications_run
    speed = {
        "simulated_s": scenario.duration_s, "wall_s": round(wall_s, 3), "speedup": round(scenario.duration_s / wall_s, 1),
        "notifications_per_wall_s": round(accepted / wall_s, 1), "provider_calls": result.provider_calls,
        "cpu_s": round(cpu_s, 3), "scale": result.scale, "notifications_run": run,
    }
    out, err = (sys.stderr, sys.stderr) if args.json else (sys.stdout, sys.stderr)
    out.write(table(result))
    err.write(f"wrote {csv_path} and {png_path}\n")
    if result.scale == 1:
        what = f"({accepted} accepted; {cpu_s:.1f} s of CPU: {accepted / max(cpu_s, 1e-9):.0f} per CPU second)"
    else:
        what = (f"counted, at scale 1/{result.scale} ({run} run, standing for {accepted} accepted; {cpu_s:.1f} s of CPU: "
                f"{run / max(cpu_s, 1e-9):.0f} run per CPU second)")
    err.write(f"speed: {scenario.duration_s:g} simulated s in {wall_s:.1f} wall s: {speed['speedup']:g}x; "
              f"{speed['notifications_per_wall_s']:g} notifications per wall second {what}\n")
    if args.json:
        print(json.dumps({"scenario": str(args.scenario), "seed": args.seed, "csv": str(csv_path), "png": str(png_path),
                          "totals": result.totals, **speed}))
    return 0
