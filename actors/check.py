"""`herald check properties`: the bucket and breaker property machines as a tool (README, "For engineers").

It runs tests/kit/test_machines.py (a source checkout with the test dependencies) in a pytest of its own, with a
budget of steps per machine, a seed (drawn and printed when not given: every run replays), Hypothesis's statistics,
and, with --config, each configured channel's limits (after printing what in them cannot behave well). A failure
prints the minimal step list Hypothesis shrank it to, then the one command that replays it.
"""

from __future__ import annotations

import argparse
import json
import importlib
import os
import random
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MACHINES = ROOT / "tests" / "kit" / "test_machines.py"
DEFAULT_EXAMPLES = 10_000  # steps per machine (tests/kit/budget.py DEFAULT_STEPS)
FAILED = re.compile(r"^FAILED \S+::test_machine\[(?P<target>[^\]]+)\]")


class CheckError(Exception):
    pass


def _targets_and_mutants() -> tuple[list[str], list[tuple[str, str]]]:
    sys.path.insert(0, str(ROOT))
    targets = importlib.import_module("tests.kit.targets")  # the source checkout's (not type-checked, as tests are not)
    return [t.name for t in targets.TARGETS], [(m.name, m.what) for m in targets.MUTANTS]


def _replay(args: argparse.Namespace, seed: int, failed: list[str]) -> str:
    words = ["herald", "check", "properties", "--seed", str(seed), "--examples", str(args.examples)]
    if args.steps_per_run != 50:
        words += ["--steps-per-run", str(args.steps_per_run)]
    if args.config is not None:
        words += ["--config", str(args.config)]
    for name in failed or ([args.target] if args.target else []):
        words += ["--target", name]
    return shlex.join(words)


def run_properties(args: argparse.Namespace) -> int:
    if not MACHINES.exists():
        raise CheckError(f"the property machines come with the source checkout ({MACHINES} is missing)")
    try:
        import hypothesis  # noqa: F401
        import pytest  # noqa: F401
    except ModuleNotFoundError as exc:
        raise CheckError(f"{exc.name} is missing: install the test dependencies (scripts/install-deps.sh requirements/test.txt)") from None
    if args.list:
        targets, mutants = _targets_and_mutants()
        if args.json:
            print(json.dumps({"targets": list(targets), "mutants": [{"name": name, "what": what} for name, what in mutants]}))
            return 0
        print("targets (each run by default):")
        print("".join(f"  {name}\n" for name in targets), end="")
        print("mutants (deliberately broken: --target NAME runs one, to see a failure and its replay):")
        print("".join(f"  {name}: {what}\n" for name, what in mutants), end="")
        return 0
    out = sys.stderr if args.json else sys.stdout  # with --json, stdout is the one JSON line of the result
    warnings: list[str] = []
    if args.examples < 1 or args.steps_per_run < 1:
        raise CheckError("--examples and --steps-per-run must be at least 1")
    env = dict(os.environ, HERALD_PROPERTIES_EXAMPLES=str(args.examples), HERALD_PROPERTIES_STEPS=str(args.steps_per_run),
               HERALD_PROPERTIES_STATISTICS="1")
    env.pop("HERALD_PROPERTIES_CONFIG", None)
    env.pop("HERALD_PROPERTIES_TARGET", None)
    if args.config is not None:
        from .config import ConfigError, load_config
        from .limits_check import limit_warnings

        try:
            config = load_config(args.config)
        except (ConfigError, ValueError) as exc:  # a missing file, a bad value: one line
            raise CheckError(str(exc)) from None
        warnings = limit_warnings(config)
        for warning in warnings:
            print(f"warning: {warning}", file=out)
        if not warnings:
            print(f"{args.config}: no configuration that cannot behave well", file=out)
        env["HERALD_PROPERTIES_CONFIG"] = str(args.config.resolve())
    if args.target:
        env["HERALD_PROPERTIES_TARGET"] = ",".join(args.target)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    command = [
        sys.executable, "-m", "pytest", str(MACHINES), "-p", "no:cacheprovider", "-q", "-s", "-o", "addopts=", "-o", "faulthandler_timeout=0", "--tb=short",
        f"--hypothesis-seed={seed}", "--durations=0", "--durations-min=0.05", "-rf",
    ]
    print(f"herald check properties: {args.examples} steps per machine, runs of {args.steps_per_run}, seed {seed}", file=out, flush=True)
    started = time.monotonic()
    failed: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            match = FAILED.match(line)
            if match:
                failed.append(match["target"])
    elapsed = time.monotonic() - started
    print(f"herald check properties: {'failed' if proc.returncode else 'passed'} in {elapsed:.1f} s (seed {seed})", file=out)
    if args.json:
        print(json.dumps({
            "passed": proc.returncode == 0, "seed": seed, "examples": args.examples, "steps_per_run": args.steps_per_run,
            "seconds": round(elapsed, 1), "failed": failed, "warnings": warnings,
            "replay": _replay(args, seed, failed) if proc.returncode else None,
        }))
    elif proc.returncode:
        print("replay (the same runs, the same shrunk steps):")
        print(f"  {_replay(args, seed, failed)}")
    return 1 if proc.returncode else 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    check = sub.add_parser("check", help="engineers' checks: the bucket and breaker property machines")
    areas = check.add_subparsers(dest="area", required=True)
    properties = areas.add_parser(
        "properties", help="run the bucket and breaker state machines against every implementation",
        description="Runs the token bucket and circuit breaker property machines (rules, invariants, reference models) "
        "against every implementation: the pure machines and the State-backed ones, with workers racing through the "
        "State. Needs a source checkout with the test dependencies.",
    )
    properties.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES, metavar="N",
                            help=f"steps per machine (default {DEFAULT_EXAMPLES:,}), in runs of --steps-per-run steps")
    properties.add_argument("--steps-per-run", type=int, default=50, metavar="K", help="steps of one run (default 50)")
    properties.add_argument("--seed", type=int, help="replay: the seed a run printed (default: a fresh one, printed)")
    properties.add_argument("--config", type=Path, help="a herald.toml: each configured channel's limits, and warnings")
    properties.add_argument("--target", action="append", metavar="NAME",
                            help="only this target, or a mutant by name (repeatable; --list shows them)")
    properties.add_argument("--list", action="store_true", help="list the targets and the mutants")
    properties.add_argument("--json", action="store_true",
                            help="the result as one JSON line on stdout (passed, seed, failed, replay, warnings); the run's output on stderr")
    properties.set_defaults(func=run_properties)
