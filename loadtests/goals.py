"""Issue 10's goals, each re-measured by its own benchmark, in one bounded run: the figures beside the goals.

Runs the benchmarks one after another (never two at once: they share the cores), each as a
process of its own with a time bound, keeps each one's whole output under `--out`, and prints
the lines that carry its figures and, for every goal, the figure against it and whether it is
met. Each benchmark measures its reference in the same run where it has one (bare Hypercorn for
the single POST, no bulk for the lanes, alone for the reads): the machine's load is printed
first, and a latency goal measured on a busy machine says little (docs/performance.md).

    .venv/bin/python loadtests/goals.py                    # everything, ~8-10 minutes on a quiet machine
    .venv/bin/python loadtests/goals.py --only worker,batch
    .venv/bin/python loadtests/goals.py --list

Exit status 0 when every benchmark ran (whatever its figures), 1 if one failed or timed out.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
Judge = Callable[[str], list[str]]


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _worker(out: str) -> list[str]:
    goals = {"sandbox": ("per CPU second", 10_000), "email": ("per CPU second", 3_000), "emulator": ("per process", 2_000),
             "twilio": ("per process", 2_000), "fcm": ("per process", 2_000), "apns": ("per process", 2_000)}
    lines = []
    for scenario, (unit, goal) in goals.items():
        pattern = r"[\d,]+/s per process, ([\d,]+)/s per CPU second" if unit == "per CPU second" else r"([\d,]+)/s per process"
        found = re.search(rf"^{scenario} \(.*?{pattern}", out, re.MULTILINE)
        if found:
            figure = _number(found.group(1))
            lines.append(f"worker {scenario}: {figure:,.0f}/s {unit} (goal >= {goal:,}): {'met' if figure >= goal else 'NOT met'}")
    return lines


def _single_post(out: str) -> list[str]:
    found = re.search(r"RATIO herald/bare: throughput ([\d.]+).*CPU per request ([\d.]+)x", out)
    if not found:
        return []
    by_cpu = 1 / float(found.group(2))
    return [f"single POST: bare's CPU per request / Herald's = {by_cpu:.2f}, throughput ratio {found.group(1)} "
            f"(goal >= 0.8): {'met' if by_cpu >= 0.8 else 'NOT met'} by CPU"]


def _reads(out: str) -> list[str]:
    lines = []
    for route in ("status", "history"):
        found = re.search(rf"GET {route}\s+under writes\s+[\d.]+ req/s\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms", out)
        if found:
            p99 = float(found.group(2))
            lines.append(f"reads under the write mix, {route}: p50 {found.group(1)} ms, p99 {p99:.1f} ms (goal p99 < 50 ms): "
                         f"{'met' if p99 < 50 else 'NOT met'}")
    return lines


def _sustained(out: str) -> list[str]:
    lost = re.search(r"LOST: accepted - appended (\d+), appended - committed (\d+)", out)
    bounded = re.search(r"^lag during the load.*$", out, re.MULTILINE)
    lines = []
    if lost:
        ok = lost.group(1) == "0" and lost.group(2) == "0"
        lines.append(f"sustained 60 s: lost {lost.group(1)} + {lost.group(2)} (goal 0): {'met' if ok else 'NOT met'}")
    if bounded:
        lines.append("sustained 60 s: " + bounded.group(0).strip())
    return lines


def _fanout(out: str) -> list[str]:
    found = re.search(r"^provider .*$", out, re.MULTILINE)
    return [f"fan-out killed mid-way: {found.group(0)}"] if found else []


def _goal_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if re.search(r"\bgoal\b", line, re.IGNORECASE)]


@dataclass
class Step:
    name: str
    args: list[str]
    timeout_s: float
    judge: Judge = _goal_lines
    keep: list[str] = field(default_factory=list)  # regexes of further lines worth printing


STEPS = [
    Step("worker", ["worker_bench.py", "--scenarios", "sandbox,email,emulator", "--count", "20000", "--no-reference"], 900, _worker),
    Step("push", ["worker_bench.py", "--scenarios", "fcm,apns,twilio", "--count", "60000", "--no-reference"], 900, _worker),
    Step("batch", ["bench_batch.py", "--node", "api"], 600),
    Step("post", ["bench.py", "--rounds", "3", "--duration", "8", "--ws-duration", "0"], 600, _single_post),
    Step("frames", ["bench_frames.py", "--rates", "100,1000"], 600, keep=[r"POST->frame p50", r"MISSING", r"server CPU .* per notification"]),
    Step("sessions", ["bench_sessions.py", "--servers", "herald", "--sessions", "10000", "--broadcast", "topic"], 1200,
         keep=[r"KiB", r"CPU per subscriber|per subscriber"]),
    Step("lanes", ["lanes_bench.py"], 600, keep=[r"POST->delivered p99"]),
    Step("lanes-topic", ["lanes_bench.py", "--bulk", "topic", "--topic-subscribers", "100000", "--duration", "20"], 1200,
         keep=[r"POST->delivered p99"]),
    Step("reads", ["read_latency_bench.py"], 600, _reads),
    Step("sustained", ["bench_sustained.py", "--rate", "40", "--duration", "60"], 600, _sustained),
    Step("fanout", ["topic_fanout.py", "--subscribers", "100000"], 1800, _fanout),
]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(step: Step, out_dir: Path) -> bool:
    log = out_dir / f"{step.name}.log"
    command = [sys.executable, str(ROOT / "loadtests" / step.args[0]), *step.args[1:]]
    print(f"\n== {step.name}: {' '.join(step.args)} (load average {_load()}; output in {log})", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=step.timeout_s)
        out, ok = done.stdout, done.returncode == 0
        status = f"exit {done.returncode}"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        ok, status = False, f"timed out after {step.timeout_s:.0f} s"
    log.write_text(out)
    for pattern in step.keep:
        for line in out.splitlines():
            if re.search(pattern, line):
                print("   " + line.strip())
    figures = step.judge(out)
    for line in figures:
        print(" * " + line)
    if not figures:
        print(" * no figure found in the output: see the log")
    print(f"   ({status} in {time.monotonic() - started:.0f} s)", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated steps (see --list)")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.add_argument("--out", type=Path, help="where the outputs go (default: a new temporary folder)")
    args = parser.parse_args()
    if args.list:
        for step in STEPS:
            print(f"{step.name:12} {' '.join(step.args)} (at most {step.timeout_s:.0f} s)")
        return 0
    chosen = STEPS if not args.only else [s for s in STEPS if s.name in args.only.split(",")]
    unknown = set(args.only.split(",")) - {s.name for s in STEPS} if args.only else set()
    if unknown:
        parser.error(f"unknown steps: {', '.join(sorted(unknown))} (see --list)")
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="herald-goals-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"goals: tree {ROOT} at {commit or '?'}; {os.cpu_count()} cores; load average {_load()}")
    failed = [step.name for step in chosen if not run(step, out_dir)]
    print(f"\ngoals: {len(chosen) - len(failed)} of {len(chosen)} benchmarks ran to the end"
          + (f"; failed or timed out: {', '.join(failed)}" if failed else "") + f"; outputs in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
